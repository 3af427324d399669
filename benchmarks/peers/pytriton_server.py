"""NVIDIA Triton (PyPI `nvidia-pytriton`) serving x*2 as model "model".

Input `input-0` FP32 [-1], output `output-0` FP32 [-1], no batching, so the same V2
requests (REST JSON, REST binary, gRPC) as the predictor's work unchanged. Runs in its
own venv (`.venv-bench-pytriton`); `benchmarks/run.sh` creates it.

Run: python benchmarks/peers/pytriton_server.py --http_port 8000 --grpc_port 8001
"""

from __future__ import annotations

import argparse

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


@batch
def double(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    return {"output-0": inputs["input-0"] * 2}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, default=8000)
    parser.add_argument("--grpc_port", type=int, default=8001)
    parser.add_argument("--metrics_port", type=int, default=8002)
    parser.add_argument("--model_name", default="model")
    args = parser.parse_args()
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=False,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=double,
            inputs=[Tensor(name="input-0", dtype=np.float32, shape=(-1,))],
            outputs=[Tensor(name="output-0", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(batching=False),
        )
        triton.serve()


if __name__ == "__main__":
    main()
