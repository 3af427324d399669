"""The predictor on a CUDA device: every protocol, reduced precision and batching.

Skipped where there is no CUDA device (CI has none; the CPU paths are tested everywhere
else). docs/benchmarks.md says how to run these on a GPU machine with the GPU benchmark.
"""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest
import requests
import torch
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.grpc_inprocess import raw_request
from tests.serving import PredictorProcess

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

X = np.linspace(-4, 4, 24, dtype=np.float32).reshape(4, 6)


def grpc_double(target: str, values: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(raw_request("model", values), timeout=30)
    assert response.outputs[0].datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(values.shape)


def v2_json_double(url: str, values: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP32",
                "shape": list(values.shape),
                "data": values.ravel().tolist(),
            }
        ]
    }
    answer = requests.post(f"{url}/v2/models/model/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert output["datatype"] == "FP32"
    return np.array(output["data"], np.float32).reshape(values.shape)


def test_cuda_serves_every_protocol():
    with PredictorProcess(extra_args=["--device", "cuda"]) as server:
        assert "on cuda" in server.wait_for_log("loaded")
        v1 = requests.post(
            f"{server.http_url}/v1/models/model:predict", json={"instances": X.tolist()}, timeout=30
        ).json()["predictions"]
        np.testing.assert_array_equal(np.array(v1, np.float32), X * 2)
        np.testing.assert_array_equal(v2_json_double(server.http_url, X), X * 2)
        np.testing.assert_array_equal(grpc_double(server.grpc_target, X), X * 2)
        legacy = requests.post(
            f"{server.http_url}/api/predict/", json={"values_list": [1, 2, 3]}, timeout=30
        ).json()
        assert legacy == {"error": False, "result": {"tensor_list": [2, 4, 6]}}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_reduced_precision_answers_in_the_callers_type(dtype):
    with PredictorProcess(extra_args=["--device", "cuda", "--dtype", dtype]) as server:
        np.testing.assert_allclose(grpc_double(server.grpc_target, X), X * 2, rtol=1e-2)


def test_cuda_batching_stacks_concurrent_calls():
    args = ["--device", "cuda", "--max_batch_size", "16", "--max_batch_delay_ms", "20"]
    with PredictorProcess(extra_args=args) as server:
        rows = [np.full((1, 6), i, np.float32) for i in range(32)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda row: grpc_double(server.grpc_target, row), rows))
        for row, answer in zip(rows, answers, strict=True):
            np.testing.assert_array_equal(answer, row * 2)
        metrics = requests.get(f"{server.http_url}/metrics", timeout=10).text
    count = _metric(metrics, 'predictor_batch_size_count{model="model"}')
    total = _metric(metrics, 'predictor_batch_size_sum{model="model"}')
    assert total == 32 and count < 32  # some calls shared a forward


def _metric(text: str, series: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(series))
    return float(line.split()[-1])
