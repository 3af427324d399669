"""Soak: `python -m predictor` under mixed traffic for a set time, every answer checked.

Drives V1, V2 JSON, V2 binary, gRPC and /api/predict at a fixed concurrency against a
real server on 127.0.0.1 (tests/serving.py), compares every answer with the demo model
run in torch (`x * 2`), and reports errors, wrong answers, p50/p99 latency per protocol
and the server's RSS growth (VmRSS after warm-up vs at the end) as markdown, on stdout
and in benchmarks/results/soak.md. Exits non-zero if a target is missed: 0 errors,
0 wrong answers, RSS growth under 10%.

    .venv/bin/python -m benchmarks.soak --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import torch
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from predictor.datatypes import V2_TO_NUMPY
from tests.grpc_inprocess import raw_request
from tests.serving import REPO_ROOT, PredictorProcess

PROTOCOLS = ["v1", "v2-json", "v2-binary", "grpc", "api-predict"]
MAX_RSS_GROWTH = 0.10
MAX_REQUESTS_PER_WORKER = 1_000_000
RESULTS = REPO_ROOT / "benchmarks" / "results" / "soak.md"
# V2 datatypes the JSON round trip carries exactly for random small values.
DATATYPES = ["FP32", "FP64", "FP16", "INT32", "INT64", "INT8", "UINT8", "BOOL"]


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0
    first_problem: str = ""

    def problem(self, kind: str, detail: str) -> None:
        if kind == "error":
            self.errors += 1
        else:
            self.wrong += 1
        self.first_problem = self.first_problem or f"{kind}: {detail[:200]}"


def doubled(array: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(array.copy()) * 2).numpy()


def random_array(rng: random.Random, datatype: str) -> np.ndarray:
    shape = [rng.randint(1, 8) for _ in range(rng.randint(1, 3))]
    values = np.array([rng.randint(-50, 50) for _ in range(int(np.prod(shape)))])
    if datatype == "BOOL":
        values = values > 0
    elif datatype.startswith("UINT"):
        values = np.abs(values)
    elif datatype.startswith("FP"):
        values = values / 4
    return values.astype(V2_TO_NUMPY[datatype]).reshape(shape)


def v2_body(datatype: str, array: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": "input-0",
                "datatype": datatype,
                "shape": list(array.shape),
                "data": array.reshape(-1).tolist(),
            }
        ]
    }


class Driver:
    def __init__(self, server: PredictorProcess, http: httpx.AsyncClient, stub) -> None:
        self.server = server
        self.http = http
        self.stub = stub
        self.model = server.model_name

    async def call(self, protocol: str, rng: random.Random) -> tuple[bool, str]:
        """One request; (answer is right, what was wrong). Errors raise."""
        if protocol == "v1":
            array = random_array(rng, "FP32")
            response = await self.http.post(
                f"/v1/models/{self.model}:predict", json={"instances": array.tolist()}
            )
            response.raise_for_status()
            got = np.array(response.json()["predictions"], np.float32)
            return np.array_equal(got, doubled(array)), f"v1 {got!r}"
        if protocol == "api-predict":
            array = random_array(rng, "FP32").reshape(-1)
            response = await self.http.post("/api/predict/", json={"values_list": array.tolist()})
            response.raise_for_status()
            got = np.array(response.json()["result"]["tensor_list"], np.float32)
            return np.array_equal(got, doubled(array)), f"api-predict {got!r}"
        datatype = rng.choice(DATATYPES)
        array = random_array(rng, datatype)
        expected = doubled(array)
        if protocol == "v2-json":
            response = await self.http.post(
                f"/v2/models/{self.model}/infer", content=orjson.dumps(v2_body(datatype, array))
            )
            response.raise_for_status()
            output = response.json()["outputs"][0]
            got = np.array(output["data"], expected.dtype).reshape(output["shape"])
            return np.array_equal(got, expected), f"v2-json {datatype} {got!r}"
        if protocol == "v2-binary":
            raw = array.tobytes()
            body = v2_body(datatype, array)
            del body["inputs"][0]["data"]
            body["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
            body["outputs"] = [{"name": "output-0", "parameters": {"binary_data": True}}]
            header = orjson.dumps(body)
            response = await self.http.post(
                f"/v2/models/{self.model}/infer",
                content=header + raw,
                headers={
                    "content-type": "application/octet-stream",
                    "inference-header-content-length": str(len(header)),
                },
            )
            response.raise_for_status()
            length = int(response.headers["inference-header-content-length"])
            got = response.content[length:]
            return got == expected.tobytes(), f"v2-binary {datatype} {got[:64]!r}"
        request = raw_request(self.model, array, datatype)
        response = await self.stub.ModelInfer(request, timeout=30)
        got = response.raw_output_contents[0]
        return got == expected.tobytes(), f"grpc {datatype} {got[:64]!r}"

    async def worker(self, index: int, deadline: float, stats: dict[str, Stats]) -> None:
        rng = random.Random(index)
        for count in range(MAX_REQUESTS_PER_WORKER):
            if time.monotonic() >= deadline:
                return
            protocol = PROTOCOLS[(index + count) % len(PROTOCOLS)]
            started = time.perf_counter()
            try:
                right, detail = await self.call(protocol, rng)
            except (httpx.HTTPError, grpc.RpcError, KeyError, ValueError) as error:
                stats[protocol].problem("error", f"{type(error).__name__}: {error}")
                continue
            stats[protocol].latencies.append(time.perf_counter() - started)
            if not right:
                stats[protocol].problem("wrong", detail)


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def soak(server: PredictorProcess, duration: float, warmup: float, concurrency: int):
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=server.http_url, limits=limits, timeout=30) as http,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        driver = Driver(server, http, pb_grpc.GRPCInferenceServiceStub(channel))
        warmup_stats = {p: Stats() for p in PROTOCOLS}
        deadline = time.monotonic() + warmup
        await asyncio.gather(
            *(driver.worker(i, deadline, warmup_stats) for i in range(concurrency))
        )
        rss_start = vm_rss_kib(server.process.pid)
        stats = {p: Stats() for p in PROTOCOLS}
        deadline = time.monotonic() + duration
        await asyncio.gather(*(driver.worker(i, deadline, stats) for i in range(concurrency)))
        rss_end = vm_rss_kib(server.process.pid)
    for protocol in PROTOCOLS:  # problems during warm-up count too
        stats[protocol].errors += warmup_stats[protocol].errors
        stats[protocol].wrong += warmup_stats[protocol].wrong
        stats[protocol].first_problem = (
            stats[protocol].first_problem or warmup_stats[protocol].first_problem
        )
    return stats, rss_start, rss_end


def report(stats, rss_start, rss_end, args) -> tuple[str, bool]:
    growth = (rss_end - rss_start) / rss_start
    lines = [
        f"# Soak: {args.duration:.0f} s, concurrency {args.concurrency}",
        "",
        f"Mixed {', '.join(PROTOCOLS)} against `python -m predictor` (demo model) on 127.0.0.1,"
        f" after {args.warmup:.0f} s of warm-up; every answer compared with torch.",
        "",
        "| protocol | requests | errors | wrong | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for protocol, s in stats.items():
        p50, p99 = (np.percentile(s.latencies, [50, 99]) * 1000) if s.latencies else (0, 0)
        lines.append(
            f"| {protocol} | {len(s.latencies)} | {s.errors} | {s.wrong} | {p50:.1f} | {p99:.1f} |"
        )
    errors = sum(s.errors for s in stats.values())
    wrong = sum(s.wrong for s in stats.values())
    total = sum(len(s.latencies) for s in stats.values())
    lines += [
        "",
        f"Total {total} requests ({total / args.duration:.0f}/s), {errors} errors, {wrong} wrong.",
        f"Server RSS: {rss_start / 1024:.1f} MiB after warm-up, {rss_end / 1024:.1f} MiB at the"
        f" end ({growth:+.1%}; target under {MAX_RSS_GROWTH:.0%}).",
    ]
    lines += [f"- {p}: first {s.first_problem}" for p, s in stats.items() if s.first_problem]
    passed = errors == 0 and wrong == 0 and growth < MAX_RSS_GROWTH
    lines += ["", f"Result: **{'PASS' if passed else 'FAIL'}**", ""]
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before RSS")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with PredictorProcess() as server:
        stats, rss_start, rss_end = asyncio.run(
            soak(server, args.duration, args.warmup, args.concurrency)
        )
        if server.process.poll() is not None:
            print(server.logs(), file=sys.stderr)
    text, passed = report(stats, rss_start, rss_end, args)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
