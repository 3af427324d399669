"""BYTES tensors on every protocol, and handlers named with --handler or in model.json,
against real `python -m predictor` processes and real clients: requests, tritonclient
(HTTP JSON, HTTP binary, gRPC) and KServe's own REST and gRPC clients."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from tests.serving import REPO_ROOT, PredictorProcess

pytestmark = pytest.mark.slow

DOUBLER = REPO_ROOT / "models" / "doubler"
# Text, empty, NUL and bytes that are not UTF-8: each must come back byte for byte.
VALUES = [b"hello", "héllo wörld".encode(), b"", b"a\x00b", b"\xff\xfe\x00\x01"]
TEXT = VALUES[:3]  # what JSON can carry


@pytest.fixture(scope="module")
def echo():
    with PredictorProcess(
        model_name="echo", extra_args=["--handler", "tests.bytes_handlers:Echo"]
    ) as p:
        yield p


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    """TextStats named in model.json, its module shipped beside the model."""
    model_dir = tmp_path_factory.mktemp("stats")
    shutil.copytree(DOUBLER, model_dir, dirs_exist_ok=True)
    shutil.copy(REPO_ROOT / "tests" / "bytes_handlers.py", model_dir / "stats_handler.py")
    signature = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(
        json.dumps({**signature, "handler": "stats_handler:TextStats"})
    )
    with PredictorProcess(model_dir, model_name="stats") as p:
        yield p


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def objects(values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# ---------------------------------------------------------------- V2 over HTTP


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http_round_trips_bytes(echo, binary):
    values = VALUES if binary else TEXT  # JSON carries text only
    client = httpclient.InferenceServerClient(echo.http_target)
    infer_input = httpclient.InferInput("data", [len(values)], "BYTES")
    infer_input.set_data_from_numpy(objects(values), binary_data=binary)
    output = httpclient.InferRequestedOutput("echo", binary_data=binary)
    result = client.infer("echo", [infer_input], outputs=[output])
    assert result.get_output("echo")["datatype"] == "BYTES"
    # tritonclient reads JSON BYTES as str, binary ones as bytes.
    assert [as_bytes(v) for v in result.as_numpy("echo").tolist()] == values


def test_v2_json_strings_and_a_2d_shape(echo):
    body = {
        "inputs": [
            {"name": "data", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "ç", ""]}
        ]
    }
    response = requests.post(f"{echo.http_url}/v2/models/echo/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output == {
        "name": "echo",
        "datatype": "BYTES",
        "shape": [2, 2],
        "data": ["a", "b", "ç", ""],
    }


def test_bytes_that_are_not_text_ask_for_binary_on_json(echo):
    client = httpclient.InferenceServerClient(echo.http_target)
    infer_input = httpclient.InferInput("data", [1], "BYTES")
    infer_input.set_data_from_numpy(objects([b"\xff"]), binary_data=True)
    with pytest.raises(httpclient.InferenceServerException) as raised:
        client.infer(
            "echo",
            [infer_input],
            outputs=[httpclient.InferRequestedOutput("echo", binary_data=False)],
        )
    assert "not UTF-8" in raised.value.message() and "binary" in raised.value.message()
    assert set(echo.probes().values()) == {200}


@pytest.mark.parametrize(
    "entry, fragment",
    [
        (
            {"datatype": "BYTES", "shape": [2], "data": ["a", 1]},
            "takes strings, got a number at element 1",
        ),
        ({"datatype": "BYTES", "shape": [3], "data": ["a", "b"]}, "shape [3] needs 3 values"),
        ({"datatype": "BYTES", "shape": [2], "data": [["a"], ["b", "c"]]}, "ragged"),
    ],
)
def test_bad_bytes_json_is_a_clear_400(echo, entry, fragment):
    body = {"inputs": [{"name": "data", **entry}]}
    response = requests.post(f"{echo.http_url}/v2/models/echo/infer", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\x05\x00\x00\x00abc", "says 5 bytes, but only 3 are left"),
        (b"\x01\x00", "cut short"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b", "needs 1 BYTES elements, but the data holds more"),
    ],
)
def test_bad_length_prefixed_bytes_are_a_clear_400(echo, payload, fragment):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "data",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    response = requests.post(
        f"{echo.http_url}/v2/models/echo/infer",
        data=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert set(echo.probes().values()) == {200}


# ---------------------------------------------------------------- V1


def test_v1_strings_and_b64(echo):
    instances = ["plain", {"b64": base64.b64encode(b"\xff\x00").decode()}]
    response = requests.post(
        f"{echo.http_url}/v1/models/echo:predict", json={"instances": instances}
    )
    assert response.status_code == 200, response.text
    # Text goes back as text, the rest as b64, as it came.
    assert response.json() == {
        "predictions": ["plain", {"b64": base64.b64encode(b"\xff\x00").decode()}]
    }
    bad = requests.post(
        f"{echo.http_url}/v1/models/echo:predict", json={"instances": [{"b64": "!!"}]}
    )
    assert bad.status_code == 400 and "invalid base64" in bad.json()["error"]


# ---------------------------------------------------------------- gRPC


def test_tritonclient_grpc_round_trips_bytes(echo):
    data = [base64.b64encode(v).decode() for v in VALUES]
    result = echo.triton_grpc(
        {"inputs": [{"name": "data", "datatype": "BYTES", "shape": [len(VALUES)], "data": data}]}
    )
    output = result["outputs"]["echo"]
    assert output["datatype"] == "BYTES" and output["shape"] == [len(VALUES)]
    assert [base64.b64decode(v) for v in output["data"]] == VALUES


def test_grpc_typed_bytes_contents(echo):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(echo.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="echo")
        tensor = request.inputs.add(name="data", datatype="BYTES", shape=[len(VALUES)])
        tensor.contents.bytes_contents.extend(VALUES)
        response = stub.ModelInfer(request, timeout=10)
        (raw,) = response.raw_output_contents
        bad = pb.ModelInferRequest(model_name="echo")
        bad.inputs.add(name="data", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(
            [b"a"]
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(bad, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [3] needs 3 values" in raised.value.details()
    # The raw output holds each element length-prefixed.
    expected = b"".join(len(v).to_bytes(4, "little") + v for v in VALUES)
    assert raw == expected


def test_kserve_rest_and_grpc_clients_round_trip_bytes(echo):
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )

    async def call() -> tuple[list, list]:
        rest_input = InferInput("data", [len(TEXT)], "BYTES")
        rest_input.set_data_from_numpy(objects(TEXT), binary_data=False)
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            rest_result = await rest.infer(
                echo.http_url,
                InferRequest(model_name="echo", infer_inputs=[rest_input]),
                model_name="echo",
            )
        finally:
            await rest.close()
        grpc_input = InferInput("data", [len(VALUES)], "BYTES")
        grpc_input.set_data_from_numpy(objects(VALUES))
        client = InferenceGRPCClient(echo.grpc_target)
        try:
            grpc_result = await client.infer(
                InferRequest(model_name="echo", infer_inputs=[grpc_input])
            )
        finally:
            await client.close()
        return rest_result.outputs[0].as_numpy().tolist(), grpc_result.outputs[
            0
        ].as_numpy().tolist()

    rest_values, grpc_values = asyncio.run(call())
    assert [as_bytes(v) for v in rest_values] == TEXT
    assert grpc_values == VALUES


# ---------------------------------------------------------------- pre- and postprocess


def test_handler_from_model_json_serves_every_protocol(stats):
    texts = ["hi", "a longer sentence"]
    expected_length = [4.0, 34.0]
    v1 = requests.post(
        f"{stats.http_url}/v1/models/stats:predict", json={"instances": texts}
    ).json()
    assert v1 == {"predictions": {"doubled_length": expected_length, "label": ["short", "long"]}}
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}]}
    v2 = requests.post(f"{stats.http_url}/v2/models/stats/infer", json=body).json()
    by_name = {o["name"]: o for o in v2["outputs"]}
    assert by_name["doubled_length"]["data"] == expected_length
    assert by_name["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["short", "long"],
    }
    grpc_result = stats.triton_grpc(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "data": [base64.b64encode(t.encode()).decode() for t in texts],
                }
            ]
        }
    )
    assert grpc_result["outputs"]["doubled_length"]["data"] == expected_length
    assert [base64.b64decode(v) for v in grpc_result["outputs"]["label"]["data"]] == [
        b"short",
        b"long",
    ]
    # The handler describes what clients send, which metadata reports.
    metadata = requests.get(f"{stats.http_url}/v2/models/stats").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    numbers = requests.post(f"{stats.http_url}/v1/models/stats:predict", json={"instances": [1, 2]})
    assert numbers.status_code == 400 and "takes BYTES" in numbers.json()["error"]


def test_without_a_handler_bytes_are_a_clear_400(tmp_path):
    with PredictorProcess(model_name="doubler") as server:
        body = {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
        response = requests.post(f"{server.http_url}/v2/models/doubler/infer", json=body)
        assert response.status_code == 400
        assert (
            "holds strings or bytes (BYTES), but the model takes numeric tensors"
            in response.json()["error"]
        )
        assert "--handler" in response.json()["error"]
        assert set(server.probes().values()) == {200}


# ---------------------------------------------------------------- bad handlers stop the process


@pytest.mark.parametrize(
    "handler, fragment",
    [
        ("tests.bytes_handlers:NotAModel", "is not a predictor.model.TorchModel subclass"),
        ("tests.bytes_handlers:Missing", "has no 'Missing'"),
        ("no_such_module:Handler", "cannot import handler module 'no_such_module'"),
        ("no-colon", "must look like 'package.module:Class'"),
    ],
)
def test_a_bad_handler_stops_with_exit_2_and_one_line(handler, fragment):
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--handler", handler, "--http_port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
