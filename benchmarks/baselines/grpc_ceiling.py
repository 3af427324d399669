"""The gRPC ceiling: a grpcio (asyncio) server whose ModelInfer answers a constant.

It receives each request's bytes and answers a prepared 100k-FP32 ModelInferResponse
(the size the grpc_100k scenario sends back), with no parsing, no model and no
(de)serialiser: what grpcio itself can do on this machine, as raw_asgi.py is for HTTP.
ServerReady answers ready, for the harness's start-up poll.

Run: python benchmarks/baselines/grpc_ceiling.py --port 8081
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
MESSAGE_LIMIT = 64 * 1024 * 1024


def constant_response(size: int) -> bytes:
    response = pb.ModelInferResponse(model_name="model", id="constant")
    output = response.outputs.add(name="output-0", datatype="FP32", shape=[size])
    del output  # only its header: the values travel as raw contents
    response.raw_output_contents.append(np.full(size, 2.0, dtype="<f4").tobytes())
    return response.SerializeToString()


async def serve(host: str, port: int, size: int) -> None:
    answer = constant_response(size)
    ready = pb.ServerReadyResponse(ready=True).SerializeToString()

    async def model_infer(request: bytes, context) -> bytes:
        return answer

    async def server_ready(request: bytes, context) -> bytes:
        return ready

    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        ]
    )
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer),
        "ServerReady": grpc.unary_unary_rpc_method_handler(server_ready),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--size", type=int, default=100_000, help="FP32 values in the answer")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.size))


if __name__ == "__main__":
    main()
