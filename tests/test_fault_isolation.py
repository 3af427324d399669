"""No client can take a replica down: real `python -m predictor` processes, real clients.

Models that are not the doubler: a torch.export Linear(4, 2) with a bounded batch, a token
classifier (INT64 ids), a model with a bug, and one that poisons its (simulated) device.
"""

from __future__ import annotations

import socket

import grpc
import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests import toy_models
from tests.grpc_inprocess import raw_request
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

ALL_READY = {
    "/v2/health/ready": 200,
    "/v2/health/live": 200,
    "/v2/models/model/ready": 200,
    "/v1/models/model": 200,
}


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """Linear(4, 2) exported with a batch of 1..64: input `x` [-1, 4]."""
    directory = tmp_path_factory.mktemp("linear")
    module = toy_models.seeded_affine()
    batch = torch.export.Dim("batch", min=1, max=64)
    toy_models.save_bounded_export(directory, module, (torch.zeros(2, 4),), ({0: batch},))
    with PredictorProcess(directory) as server:
        yield server, module


def v2_json(server, name, shape, data, datatype="FP32"):
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    return requests.post(f"{server.http_url}/v2/models/model/infer", json=body, timeout=10)


def grpc_stub(server) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))


def grpc_error(server, name, array, datatype) -> grpc.RpcError:
    request = raw_request("model", array, datatype)
    request.inputs[0].name = name
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub(server).ModelInfer(request, timeout=10)
    return caught.value


def test_wrong_fixed_dimension_is_a_400_on_every_protocol(linear):
    server, _ = linear
    expected = "input 'x': expected shape [-1, 4] with dimension 0 in 1..64, got [2, 3]"
    x = np.zeros((2, 3), np.float32)
    v1 = requests.post(
        f"{server.http_url}/v1/models/model:predict", json={"instances": x.tolist()}, timeout=10
    )
    assert (v1.status_code, v1.json()) == (400, {"error": expected})
    v2 = v2_json(server, "x", [2, 3], x.ravel().tolist())
    assert (v2.status_code, v2.json()) == (400, {"error": expected})
    client = httpclient.InferenceServerClient(server.http_target)
    binary = httpclient.InferInput("x", [2, 3], "FP32")
    binary.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 4\]"):
        client.infer("model", [binary])
    error = grpc_error(server, "x", x, "FP32")
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    assert server.probes() == ALL_READY


def test_rank_bounds_and_datatypes_are_checked_before_the_model_runs(linear):
    server, module = linear
    rank = requests.post(
        f"{server.http_url}/v1/models/model:predict", json={"instances": [1, 2, 3, 4]}, timeout=10
    )
    assert rank.status_code == 400
    assert rank.json()["error"].endswith("got [4]")
    too_many = v2_json(server, "x", [65, 4], [0.0] * 260)
    assert too_many.status_code == 400
    assert "dimension 0 in 1..64, got [65, 4]" in too_many.json()["error"]
    empty = v2_json(server, "x", [0, 4], [])
    assert empty.status_code == 400
    # Integers and wider floats are converted to the model's FP32; the answer is torch's.
    x = np.arange(8).reshape(2, 4)
    expected = module(torch.from_numpy(x).float()).detach().numpy()
    for datatype in ("INT32", "FP64"):
        answer = v2_json(server, "x", [2, 4], x.ravel().tolist(), datatype)
        assert answer.status_code == 200, answer.text
        output = answer.json()["outputs"][0]
        assert output["datatype"] == "FP32"
        np.testing.assert_allclose(np.array(output["data"]).reshape(2, 2), expected, rtol=1e-6)
    booleans = v2_json(server, "x", [1, 4], [True] * 4, "BOOL")
    assert booleans.status_code == 200
    assert server.probes() == ALL_READY


def test_guard_failures_and_repeated_bad_input_never_change_readiness(linear):
    server, _ = linear
    for _ in range(10):
        assert v2_json(server, "x", [2, 3], [0.0] * 6).status_code == 400
        assert server.probes() == ALL_READY
    assert server.metric('predictor_model_healthy{model="model"}') == 1.0
    assert "Traceback" not in server.logs()


def test_token_ids_must_be_integers(tmp_path):
    torch.manual_seed(0)
    module = toy_models.TokenClassifier().eval()
    length = torch.export.Dim("length", min=1, max=16)
    batch = torch.export.Dim("batch", min=1, max=8)
    example = (torch.zeros(2, 5, dtype=torch.int64),)
    toy_models.save_bounded_export(tmp_path, module, example, ({0: batch, 1: length},))
    with PredictorProcess(tmp_path) as server:
        floats = v2_json(server, "ids", [1, 3], [1.0, 2.0, 3.0], "FP32")
        assert floats.status_code == 400
        assert floats.json()["error"].startswith("input 'ids': expected datatype INT64, got FP32")
        too_long = v2_json(server, "ids", [1, 17], list(range(17)), "INT64")
        assert too_long.status_code == 400
        assert "dimension 1 in 1..16" in too_long.json()["error"]
        int32 = v2_json(server, "ids", [1, 3], [1, 2, 3], "INT32")
        assert int32.status_code == 200
        expected = module(torch.tensor([[1, 2, 3]])).detach().numpy()
        np.testing.assert_allclose(int32.json()["outputs"][0]["data"], expected.ravel(), rtol=1e-5)
        error = grpc_error(server, "ids", np.ones((1, 3), np.float32), "FP32")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.probes() == ALL_READY


def test_model_json_shapes_are_enforced(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE)
    args = ["--model_class", "tests.toy_models:Affine"]
    with PredictorProcess(tmp_path, extra_args=args) as server:
        answer = v2_json(server, "x", [2, 2], [1.0, 2.0, 3.0, 4.0])
        assert answer.status_code == 400
        assert answer.json() == {"error": "input 'x': expected shape [-1, 4], got [2, 2]"}
        rows = requests.post(
            f"{server.http_url}/v1/models/model:predict",
            json={"instances": [{"x": [1, 2, 3, 4]}, {"x": [0, 0, 0, 0]}]},
            timeout=10,
        )
        assert rows.status_code == 200, rows.text
        assert np.array(rows.json()["predictions"]).shape == (2, 2)


def test_model_faults_fail_alone_and_never_make_the_server_unready(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.FailsOnNegative(), None)
    args = ["--model_class", "tests.toy_models:FailsOnNegative"]
    with PredictorProcess(tmp_path, extra_args=args) as server:
        url = f"{server.http_url}/v1/models/model:predict"
        for _ in range(8):
            fault = requests.post(url, json={"instances": [-1.0]}, timeout=10)
            assert fault.status_code == 500
            assert fault.json() == {"error": "internal error: KeyError: 'internal lookup failed'"}
            assert server.probes() == ALL_READY
        assert requests.post(url, json={"instances": [1.0]}, timeout=10).json() == {
            "predictions": [2.0]
        }
        assert server.metric('predictor_model_healthy{model="model"}') == 1.0
        assert server.logs().count("Traceback") == 8  # each fault logged once


def test_a_poisoned_device_fails_liveness_and_readiness_together(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.PoisonsDevice(), None)
    args = ["--model_class", "tests.toy_models:PoisonsDevice"]
    with PredictorProcess(tmp_path, extra_args=args) as server:
        url = f"{server.http_url}/v1/models/model:predict"
        assert requests.post(url, json={"instances": [1.0]}, timeout=10).status_code == 200
        fault = requests.post(url, json={"instances": [-1.0]}, timeout=10)
        assert fault.status_code == 500
        assert "illegal memory access" in fault.json()["error"]
        assert set(server.probes().values()) == {503}
        assert server.metric('predictor_model_healthy{model="model"}') == 0.0
        after = requests.post(url, json={"instances": [1.0]}, timeout=10)
        assert after.status_code == 503 and "broken" in after.json()["error"]
        stub = grpc_stub(server)
        assert not stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="model"), timeout=10).ready


def test_a_truncated_body_is_a_client_disconnect_never_parsed(linear):
    server, _ = linear
    series = 'predictor_requests_total{{model="model",protocol="v1",status="{}"}}'
    client_errors = server.metric(series.format(400))
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(
            b"POST /v1/models/model:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            b'{"instances"'
        )
    logs = server.wait_for_log('"status":499')
    line = next(line for line in logs.splitlines() if '"status":499' in line)
    assert "client disconnected after 12 bytes" in line
    assert "malformed JSON" not in logs
    assert server.metric(series.format(400)) == client_errors
    assert server.metric(series.format(499)) == 1.0
    assert server.probes() == ALL_READY


def test_curl_default_form_content_type_is_read_as_json(linear):
    server, _ = linear
    answer = requests.post(
        f"{server.http_url}/v1/models/model:predict",
        data=b'{"instances": [[1, 2, 3, 4]]}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    form = requests.post(
        f"{server.http_url}/v1/models/model:predict", data={"instances": "1"}, timeout=10
    )
    assert form.status_code == 400 and "malformed JSON" in form.json()["error"]


def test_model_repository_cannot_unload_the_model(linear):
    server, _ = linear
    for action in ("unload", "load"):
        answer = requests.post(f"{server.http_url}/v2/repository/models/model/{action}", timeout=10)
        assert answer.status_code == 403
        assert "disabled" in answer.json()["error"]
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub(server).RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="model"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert server.probes() == ALL_READY
    assert v2_json(server, "x", [1, 4], [0.0] * 4).status_code == 200


def test_a_wrong_state_dict_reports_every_mismatch(tmp_path):
    torch.save({"linear.weight": torch.zeros(3, 3), "extra": torch.zeros(1)}, tmp_path / "w.pth")
    server = PredictorProcess(tmp_path, extra_args=["--model_class", "tests.toy_models:Affine"])
    with pytest.raises(RuntimeError) as caught:
        server.start()
    message = caught.value.args[0]
    for fragment in ('"linear.bias"', '"extra"', "size mismatch for linear.weight"):
        assert fragment in message


def test_a_guard_failing_inside_the_program_is_a_400(tmp_path):
    pairs = 2 * torch.export.Dim("pairs", min=1, max=32)
    toy_models.save_bounded_export(tmp_path, toy_models.Pairs(), (torch.zeros(4),), ({0: pairs},))
    with PredictorProcess(tmp_path) as server:
        assert v2_json(server, "x", [4], [1, 2, 3, 4]).json()["outputs"][0]["data"] == [3, 7]
        odd = v2_json(server, "x", [5], [1, 2, 3, 4, 5])
        assert odd.status_code == 400
        assert "Guard failed: x.size()[0] % 2 == 0" in odd.json()["error"]
        error = grpc_error(server, "x", np.ones(5, np.float32), "FP32")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.probes() == ALL_READY
        assert "Traceback" not in server.logs()


def test_a_cnn_refuses_other_image_sizes_and_layouts(tmp_path):
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=16)
    example = (torch.zeros(2, 1, 28, 28),)
    toy_models.save_bounded_export(tmp_path, toy_models.TinyCNN().eval(), example, ({0: batch},))
    with PredictorProcess(tmp_path) as server:
        for shape in ([1, 1, 32, 32], [1, 28, 28, 1], [1, 28, 28]):
            answer = v2_json(server, "image", shape, [0.0] * int(np.prod(shape)))
            assert answer.status_code == 400
            assert answer.json()["error"] == (
                "input 'image': expected shape [-1, 1, 28, 28] with dimension 0 in 1..16, "
                f"got {shape}"
            )
        good = v2_json(server, "image", [1, 1, 28, 28], [0.0] * 784)
        assert good.status_code == 200 and good.json()["outputs"][0]["shape"] == [1, 10]
        assert server.probes() == ALL_READY


def test_legacy_api_says_numbers_are_expected(linear):
    server, _ = linear
    answer = requests.post(
        f"{server.http_url}/api/predict/", json={"values_list": ["1", "2"]}, timeout=10
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "error": True,
        "message": '"values_list": values must be numbers, not strings',
    }
