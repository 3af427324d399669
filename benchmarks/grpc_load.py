"""A bounded gRPC load generator: N concurrent ModelInfer calls for a fixed time.

Sends one prepared V2 `ModelInferRequest` (input `input-0`, FP32, `raw_input_contents`)
over and over from `--concurrency` asyncio tasks until `--seconds` pass (or
`--max-requests` are done), then prints one JSON line: requests, errors, duration_s,
p50_us, p99_us. The harness pins it to the load core with taskset.

Run: python -m benchmarks.grpc_load --target 127.0.0.1:8081 --seconds 5 --size 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def build_request(model: str, values: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = "input-0"
    tensor.datatype = "FP32"
    tensor.shape.extend(values.shape)
    request.raw_input_contents.append(values.astype("<f4").tobytes())
    return request


def output_values(response: service_pb2.ModelInferResponse) -> np.ndarray:
    """The first output of a ModelInfer response as a float32 array of its shape."""
    shape = list(response.outputs[0].shape)
    if response.raw_output_contents:
        flat = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        flat = np.asarray(response.outputs[0].contents.fp32_contents, dtype=np.float32)
    return flat.reshape(shape) if int(np.prod(shape)) == flat.size else flat


def infer_once(target: str, model: str, values: np.ndarray, timeout: float = 10.0) -> np.ndarray:
    """One synchronous call, for the harness's correctness check."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return output_values(stub.ModelInfer(build_request(model, values), timeout=timeout))


async def run_load(
    target: str,
    model: str,
    size: int,
    concurrency: int,
    seconds: float,
    max_requests: int,
    rows: int = 0,
) -> dict:
    """rows=0 sends shape [size]; rows>0 sends shape [rows, size]."""
    values = np.linspace(0, 100, size * max(rows, 1), dtype=np.float32)
    if rows:
        values = values.reshape(rows, size)
    request = build_request(model, values)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) + errors < max_requests:
                sent = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    if latencies:
        p50, p99 = np.percentile(np.asarray(latencies) * 1e6, [50, 99])
    else:
        p50 = p99 = float("nan")
    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_s": duration,
        "p50_us": float(p50),
        "p99_us": float(p99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--model", default="model")
    parser.add_argument("--size", type=int, default=100_000, help="FP32 elements per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=0, help="send [rows, size] (0: [size])")
    args = parser.parse_args()
    result = asyncio.run(
        run_load(
            args.target,
            args.model,
            args.size,
            args.concurrency,
            args.seconds,
            args.max_requests,
            args.rows,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
