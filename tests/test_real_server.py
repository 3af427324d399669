"""`python -m predictor` as a real process on 127.0.0.1, called by clients nobody here
wrote: requests, tritonclient (HTTP JSON, HTTP binary, gRPC) and KServe's own clients.
Every answer is compared with the model run directly in torch."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient

from tests import toy_models
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

X = np.arange(-6, 6, dtype=np.float32).reshape(3, 4) / 4


def torch_doubled(array: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(array) * 2).numpy()


@pytest.fixture(scope="module")
def server():
    with PredictorProcess(model_name="doubler") as process:
        yield process


def test_requests_v1_and_legacy(server):
    v1 = requests.post(
        f"{server.http_url}/v1/models/doubler:predict", json={"instances": X.tolist()}
    )
    assert v1.status_code == 200
    np.testing.assert_array_equal(np.array(v1.json()["predictions"], np.float32), torch_doubled(X))
    legacy = requests.post(f"{server.http_url}/api/predict/", json={"values_list": [1, 2, 3, 4]})
    assert legacy.json() == {"error": False, "result": {"tensor_list": [2, 4, 6, 8]}}
    bad = requests.post(f"{server.http_url}/api/predict/", json={"values_list": ["x"]})
    assert bad.status_code == 422 and bad.json()["error"] is True


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http(server, binary):
    client = httpclient.InferenceServerClient(server.http_target)
    assert client.is_server_ready() and client.is_model_ready("doubler")
    metadata = client.get_model_metadata("doubler")
    assert metadata["inputs"][0] == {"name": "input-0", "datatype": "FP32", "shape": [-1]}
    infer_input = httpclient.InferInput("input-0", list(X.shape), "FP32")
    infer_input.set_data_from_numpy(X, binary_data=binary)
    output = httpclient.InferRequestedOutput("output-0", binary_data=binary)
    result = client.infer("doubler", [infer_input], outputs=[output])
    np.testing.assert_array_equal(result.as_numpy("output-0"), torch_doubled(X))


def test_tritonclient_grpc_raw_contents(server):
    cases = [(np.int32, "INT32"), (np.float64, "FP64"), (np.uint8, "UINT8"), (np.float32, "FP32")]
    for dtype, datatype in cases:
        array = np.arange(10, dtype=dtype).reshape(2, 5)
        tensor = {"name": "input-0", "datatype": datatype, "shape": [2, 5], "data": array.tolist()}
        result = server.triton_grpc({"inputs": [tensor]})
        assert result["live"] and result["ready"]
        assert result["metadata"]["inputs"][0]["datatype"] == "FP32"
        output = result["outputs"]["output-0"]
        assert output["datatype"] == datatype and output["shape"] == [2, 5]
        np.testing.assert_array_equal(np.array(output["data"], dtype), torch_doubled(array))
    logs = server.wait_for_log('"method":"grpc"')
    assert logs.count('"method":"grpc"') >= len(cases)
    assert "grpc method:" not in logs  # KServe's own per-call line is replaced by ours


def test_grpc_typed_contents(server):
    """A ModelInferRequest with typed contents instead of raw bytes, through KServe's stub."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="doubler")
        tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[3])
        tensor.contents.fp32_contents.extend([1.0, 2.5, -3.0])
        response = stub.ModelInfer(request, timeout=10)
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [2.0, 5.0, -6.0]


def test_grpc_client_errors_are_statuses_without_tracebacks(server):
    """An unknown model is NOT_FOUND on KServe's RPCs and on ModelInfer alike, and costs
    no traceback in the log (KServe's interceptor logs one for every such call)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [
            lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=10),
            lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert "nope" in raised.value.details()
    logs = server.wait_for_log('"path":"ModelInfer/nope"')
    assert "Traceback" not in logs


def test_grpc_bad_input_is_invalid_argument(server):
    tensor = {"name": "wrong-name", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    result = server.triton_grpc({"inputs": [tensor]})
    assert result["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "unknown input 'wrong-name'" in result["error"]["message"]


def test_kserve_rest_and_grpc_clients(server):
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )

    async def call() -> tuple[np.ndarray, np.ndarray]:
        infer_input = InferInput("input-0", list(X.shape), "FP32")
        infer_input.set_data_from_numpy(X, binary_data=False)
        request = InferRequest(model_name="doubler", infer_inputs=[infer_input])
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            rest_result = await rest.infer(server.http_url, request, model_name="doubler")
        finally:
            await rest.close()
        grpc_input = InferInput("input-0", list(X.shape), "FP32")
        grpc_input.set_data_from_numpy(X)
        grpc_client = InferenceGRPCClient(server.grpc_target)
        try:
            grpc_result = await grpc_client.infer(
                InferRequest(model_name="doubler", infer_inputs=[grpc_input])
            )
        finally:
            await grpc_client.close()
        return rest_result.outputs[0].as_numpy(), grpc_result.outputs[0].as_numpy()

    rest_output, grpc_output = asyncio.run(call())
    np.testing.assert_array_equal(rest_output.reshape(X.shape), torch_doubled(X))
    np.testing.assert_array_equal(grpc_output.reshape(X.shape), torch_doubled(X))


def test_one_json_log_line_per_request(server):
    before = server.logs().count('"logger":"predictor.access"')
    requests.post(
        f"{server.http_url}/v1/models/doubler:predict",
        json={"instances": [1]},
        headers={"X-Request-Id": "trace-me"},
    )
    logs = server.wait_for_log('"request_id":"trace-me"')
    assert logs.count('"logger":"predictor.access"') == before + 1
    assert '"request_id":"trace-me"' in logs
    assert "uvicorn.access" not in logs


def test_slow_model_does_not_block_health_probes(tmp_path):
    """While one request computes for 1.5 s, readiness answers at once."""
    toy_models.save_state_dict(tmp_path, toy_models.Slow(), None)
    with (
        PredictorProcess(
            tmp_path, extra_args=["--model_class", "tests.toy_models:Slow"], ready_timeout=120
        ) as process,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(
            requests.post,
            f"{process.http_url}/v1/models/model:predict",
            json={"instances": [1.0]},
            timeout=30,
        )
        process.wait_for_inflight(1)
        probe = requests.get(f"{process.http_url}/v2/health/ready", timeout=1.0)
        assert probe.status_code == 200
        assert not slow.done(), "the probe must have answered while inference was running"
        assert slow.result().json() == {"predictions": [2.0]}
