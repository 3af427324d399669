"""Open Inference Protocol conformance against a real server: the binary tensor
extension's per-output override, metadata without `versions: null`, the extensions
actually implemented, duplicate outputs refused; and every response checked against the
protocol's own OpenAPI schemas (`../shared/reference/open_inference_rest.yaml`, a second
opinion that skips when absent)."""

from __future__ import annotations

import json

import grpc
import jsonschema
import numpy as np
import pytest
import requests
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests import toy_models
from tests.grpc_inprocess import raw_request
from tests.serving import REPO_ROOT, PredictorProcess

pytestmark = pytest.mark.slow

OIP_DOCUMENT = REPO_ROOT.parent / "shared" / "reference" / "open_inference_rest.yaml"
HEADER_LENGTH = "inference-header-content-length"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A model with two outputs: (a, b) -> (sum, product)."""
    directory = tmp_path_factory.mktemp("two")
    toy_models.save_torchscript(directory, toy_models.TwoInputs(), toy_models.TWO_INPUTS_SIGNATURE)
    with PredictorProcess(directory) as process:
        yield process


def infer(server, outputs=None, parameters=None) -> requests.Response:
    body: dict = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [2], "data": [3, 4]},
        ]
    }
    if outputs is not None:
        body["outputs"] = outputs
    if parameters is not None:
        body["parameters"] = parameters
    return requests.post(f"{server.http_url}/v2/models/model/infer", json=body, timeout=10)


def binary_parts(response: requests.Response) -> tuple[dict, bytes]:
    length = int(response.headers.get(HEADER_LENGTH, len(response.content)))
    return json.loads(response.content[:length]), response.content[length:]


def test_per_output_binary_data_overrides_the_request_default(server):
    outputs = [{"name": "sum", "parameters": {"binary_data": False}}, {"name": "product"}]
    header, data = binary_parts(infer(server, outputs, {"binary_data_output": True}))
    by_name = {o["name"]: o for o in header["outputs"]}
    assert by_name["sum"]["data"] == [4.0, 6.0]
    assert by_name["product"]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(data, np.float32).tolist() == [3.0, 8.0]
    # And the other way round: binary for one output of a JSON request.
    outputs = [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "product"}]
    header, data = binary_parts(infer(server, outputs))
    by_name = {o["name"]: o for o in header["outputs"]}
    assert by_name["product"]["data"] == [3.0, 8.0]
    assert np.frombuffer(data, np.float32).tolist() == [4.0, 6.0]


def test_an_output_requested_twice_is_refused(server):
    answer = infer(server, [{"name": "sum"}, {"name": "sum"}])
    assert answer.status_code == 400
    assert answer.json() == {"error": "output 'sum' is requested more than once"}
    request = raw_request("model", np.ones(2, np.float32))
    request.inputs[0].name = "a"
    request.inputs.add(name="b", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    request.outputs.add(name="sum")
    request.outputs.add(name="sum")
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


EXTENSIONS = ["binary_tensor_data", "classification", "statistics"]


def test_metadata_has_no_null_versions_and_lists_the_implemented_extensions(server):
    metadata = requests.get(f"{server.http_url}/v2/models/model", timeout=10).json()
    assert metadata == {
        "name": "model",
        "platform": "",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1]},
            {"name": "b", "datatype": "FP32", "shape": [-1]},
        ],
        "outputs": [
            {"name": "sum", "datatype": "FP32", "shape": [-1]},
            {"name": "product", "datatype": "FP32", "shape": [-1]},
        ],
    }
    for path in ("/v2", "/v2/"):
        server_metadata = requests.get(server.http_url + path, timeout=10).json()
        assert server_metadata["extensions"] == EXTENSIONS
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))
    grpc_metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert list(grpc_metadata.extensions) == EXTENSIONS


@pytest.fixture(scope="module")
def oip_schemas():
    if not OIP_DOCUMENT.exists():
        pytest.skip("../shared/reference/open_inference_rest.yaml is absent")
    return yaml.safe_load(OIP_DOCUMENT.read_text())["components"]


def check(oip_schemas, name: str, document) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": oip_schemas}
    jsonschema.Draft202012Validator(schema).validate(document)


def test_every_response_validates_against_the_protocols_own_schemas(server, oip_schemas):
    url = server.http_url
    check(oip_schemas, "metadata_server_response", requests.get(f"{url}/v2/", timeout=10).json())
    check(
        oip_schemas,
        "metadata_model_response",
        requests.get(f"{url}/v2/models/model", timeout=10).json(),
    )
    check(oip_schemas, "inference_response", infer(server).json())
    check(oip_schemas, "inference_response", infer(server, [{"name": "product"}]).json())
    errors = [
        infer(server, [{"name": "nope"}]),
        infer(server, [{"name": "sum"}, {"name": "sum"}]),
        requests.post(f"{url}/v2/models/model/infer", json={"inputs": []}, timeout=10),
        requests.post(f"{url}/v2/models/model/infer", data=b"{", timeout=10),
    ]
    for error in errors:
        assert error.status_code == 400
        check(oip_schemas, "inference_error_response", error.json())
    missing = requests.get(f"{url}/v2/models/nope", timeout=10)
    assert missing.status_code == 404
    check(oip_schemas, "metadata_model_error_response", missing.json())
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/model/ready"):
        assert requests.get(url + path, timeout=10).status_code == 200


def test_the_schema_check_catches_versions_null(oip_schemas):
    """The check can fail: KServe's own metadata answer does not validate."""
    kserve_answer = {"name": "m", "versions": None, "platform": "", "inputs": [], "outputs": []}
    with pytest.raises(jsonschema.ValidationError):
        check(oip_schemas, "metadata_model_response", kserve_answer)
