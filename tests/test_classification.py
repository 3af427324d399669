"""Classification results (Triton's classification extension on V2 REST and gRPC, labels
and scores on V1) against real `python -m predictor` processes serving a small classifier,
called with requests and tritonclient (HTTP JSON, HTTP binary, gRPC). Every answer is
compared with torch.topk of the model run directly in torch."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient

from predictor import classification
from tests import toy_models
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

LABELS = toy_models.CLASSIFIER_LABELS
CLASSES = len(LABELS)
# Rows whose logits are all distinct, each with a different top class.
X = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, -0.5, 0.25, 2.0]],
    dtype=np.float32,
)


def torch_top(count: int) -> tuple[np.ndarray, np.ndarray]:
    """torch.topk of the classifier run directly in torch on X."""
    with torch.inference_mode():
        logits = toy_models.Classifier().eval()(torch.from_numpy(X))
    assert all(len(set(row.tolist())) == CLASSES for row in logits), "ties would be unordered"
    values, indices = torch.topk(logits, min(count, CLASSES), dim=1)
    return values.numpy(), indices.numpy()


def expected_strings(count: int, labels: list[str] | None = LABELS) -> list[list[str]]:
    """What Triton answers: "<value>:<index>[:<label>]", the value as std::to_string writes
    a float (six decimals)."""
    values, indices = torch_top(count)
    return [
        [
            f"{float(v):f}:{i}" + (f":{labels[i]}" if labels else "")
            for v, i in zip(row_values, row_indices, strict=True)
        ]
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)
    ]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The classifier with a labels.txt naming its five classes."""
    model_dir = toy_models.save_classifier(tmp_path_factory.mktemp("labelled"))
    with PredictorProcess(model_dir, model_name="animals") as process:
        yield process


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """The classifier without labels.txt, with a second (BOOL) output."""
    model_dir = toy_models.save_classifier(
        tmp_path_factory.mktemp("unlabelled"), labels=None, flags=True
    )
    with PredictorProcess(model_dir, model_name="plain") as process:
        yield process


def v2_body(outputs: list[dict]) -> dict:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(X.shape), "data": X.tolist()}],
        "outputs": outputs,
    }


def infer(server, body: dict) -> requests.Response:
    return requests.post(f"{server.http_url}/v2/models/{server.model_name}/infer", json=body)


def text(values) -> list:
    """tritonclient reads JSON BYTES as str and binary ones as bytes: both as str."""
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in values]


# ---------------------------------------------------------------- V2 REST


@pytest.mark.parametrize("count", [1, 3, CLASSES])
def test_v2_json_top_k_with_labels(labelled, count):
    response = infer(
        labelled, v2_body([{"name": "logits", "parameters": {"classification": count}}])
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "logits" and output["datatype"] == "BYTES"
    assert output["shape"] == [len(X), count]
    assert np.array(output["data"]).reshape(len(X), count).tolist() == expected_strings(count)


def test_the_values_are_the_models_own(labelled):
    """Parsed back as Triton's own tests read them: value, index, label."""
    response = infer(labelled, v2_body([{"name": "logits", "parameters": {"classification": 2}}]))
    values, indices = torch_top(2)
    parsed = [entry.split(":") for entry in response.json()["outputs"][0]["data"]]
    assert [int(i) for _, i, _ in parsed] == indices.reshape(-1).tolist()
    np.testing.assert_allclose([float(v) for v, _, _ in parsed], values.reshape(-1), atol=5e-7)
    assert [label for _, _, label in parsed] == [LABELS[i] for i in indices.reshape(-1)]


def test_k_past_the_classes_returns_every_class(labelled):
    response = infer(labelled, v2_body([{"name": "logits", "parameters": {"classification": 50}}]))
    (output,) = response.json()["outputs"]
    assert output["shape"] == [len(X), CLASSES]
    assert np.array(output["data"]).reshape(len(X), CLASSES).tolist() == expected_strings(CLASSES)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http_class_count(labelled, binary):
    client = httpclient.InferenceServerClient(labelled.http_target)
    infer_input = httpclient.InferInput("x", list(X.shape), "FP32")
    infer_input.set_data_from_numpy(X, binary_data=binary)
    output = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=3)
    result = client.infer("animals", [infer_input], outputs=[output])
    assert result.get_output("logits")["datatype"] == "BYTES"
    assert result.get_output("logits")["shape"] == [len(X), 3]
    if binary:
        assert "binary_data_size" in result.get_output("logits")["parameters"]
    assert text(result.as_numpy("logits").tolist()) == expected_strings(3)


def test_classification_and_raw_outputs_in_one_request_without_labels(unlabelled):
    response = infer(
        unlabelled,
        v2_body(
            [
                {"name": "logits", "parameters": {"classification": 2}},
                {"name": "positive", "parameters": {"binary_data": False}},
            ]
        ),
    )
    assert response.status_code == 200, response.text
    logits, positive = response.json()["outputs"]
    assert logits["datatype"] == "BYTES" and logits["shape"] == [len(X), 2]
    assert np.array(logits["data"]).reshape(len(X), 2).tolist() == expected_strings(2, None)
    assert positive["datatype"] == "BOOL" and positive["shape"] == [len(X), CLASSES]


@pytest.mark.parametrize("count", [0, -1, 1.5, 2.0, "3", True, None, [2]])
def test_a_bad_count_is_a_400_naming_the_output(labelled, count):
    response = infer(
        labelled, v2_body([{"name": "logits", "parameters": {"classification": count}}])
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert "output 'logits'" in message and "positive integer" in message
    assert set(labelled.probes().values()) == {200}


def test_classification_of_an_unknown_output_is_a_400(labelled):
    response = infer(labelled, v2_body([{"name": "scores", "parameters": {"classification": 2}}]))
    assert response.status_code == 400
    assert "unknown output 'scores'" in response.json()["error"]


def test_classification_of_a_bool_output_is_a_400(unlabelled):
    response = infer(
        unlabelled, v2_body([{"name": "positive", "parameters": {"classification": 2}}])
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert "output 'positive' is BOOL" in message and "numeric output" in message
    assert set(unlabelled.probes().values()) == {200}


def test_server_metadata_lists_the_extension(labelled):
    metadata = requests.get(f"{labelled.http_url}/v2", timeout=10).json()
    assert "classification" in metadata["extensions"]


# ---------------------------------------------------------------- gRPC


def triton_grpc(server, outputs: list[dict]) -> dict:
    """tritonclient's gRPC client on X, asking for `outputs`."""
    tensor = {"name": "x", "datatype": "FP32", "shape": list(X.shape), "data": X.tolist()}
    return server.triton_grpc({"inputs": [tensor], "outputs": outputs})


@pytest.mark.parametrize("count", [2, 9])
def test_tritonclient_grpc_class_count(labelled, count):
    result = triton_grpc(labelled, [{"name": "logits", "class_count": count}])
    output = result["outputs"]["logits"]
    kept = min(count, CLASSES)
    assert output["datatype"] == "BYTES" and output["shape"] == [len(X), kept]
    strings = [base64.b64decode(v).decode() for v in output["data"]]
    assert np.array(strings).reshape(len(X), kept).tolist() == expected_strings(count)


def test_tritonclient_grpc_without_labels(unlabelled):
    result = triton_grpc(unlabelled, [{"name": "logits", "class_count": 1}])
    strings = [base64.b64decode(v).decode() for v in result["outputs"]["logits"]["data"]]
    assert [[s] for s in strings] == expected_strings(1, None)


def test_grpc_errors_are_invalid_argument(unlabelled):
    bad_count = triton_grpc(unlabelled, [{"name": "logits", "class_count": -2}])
    assert bad_count["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "positive integer" in bad_count["error"]["message"]
    not_numeric = triton_grpc(unlabelled, [{"name": "positive", "class_count": 2}])
    assert not_numeric["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "output 'positive' is BOOL" in not_numeric["error"]["message"]


def test_grpc_count_must_be_an_int64_param(unlabelled):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="plain")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=list(X.shape))
    tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
    request.outputs.add(name="logits").parameters["classification"].string_param = "2"
    with grpc.insecure_channel(unlabelled.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be an int64_param" in raised.value.details()


# ---------------------------------------------------------------- V1


def v1(server, body: dict) -> requests.Response:
    return requests.post(f"{server.http_url}/v1/models/{server.model_name}:predict", json=body)


def test_v1_top_class_per_instance(labelled):
    response = v1(labelled, {"instances": X.tolist(), "parameters": {"classification": True}})
    assert response.status_code == 200, response.text
    values, indices = torch_top(1)
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [LABELS[i] for i in indices[:, 0]]
    assert [p["index"] for p in predictions] == indices[:, 0].tolist()
    # Scores are written as float32, like every V1 output: they read back exactly.
    assert np.array([p["score"] for p in predictions], np.float32).tolist() == values[:, 0].tolist()
    assert list(predictions[0]) == ["label", "index", "score"]


def test_v1_top_k_per_instance_without_labels(tmp_path):
    model_dir = toy_models.save_classifier(tmp_path, labels=None)
    with PredictorProcess(model_dir, model_name="nolabels") as server:
        response = v1(server, {"instances": X.tolist(), "parameters": {"classification": 3}})
    assert response.status_code == 200, response.text
    values, indices = torch_top(3)
    predictions = response.json()["predictions"]
    assert [[c["index"] for c in row] for row in predictions] == indices.tolist()
    assert [[np.float32(c["score"]) for c in row] for row in predictions] == values.tolist()
    assert all(set(c) == {"index", "score"} for row in predictions for c in row)


def test_v1_without_the_parameter_is_unchanged(labelled):
    response = v1(labelled, {"instances": X.tolist()})
    with torch.inference_mode():
        logits = toy_models.Classifier().eval()(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(np.array(response.json()["predictions"], np.float32), logits)
    off = v1(labelled, {"instances": X.tolist(), "parameters": {"classification": False}})
    assert off.json() == response.json()


@pytest.mark.parametrize("value", [0, -3, 2.5, "top"])
def test_v1_bad_parameter_is_a_400(labelled, value):
    response = v1(labelled, {"instances": X.tolist(), "parameters": {"classification": value}})
    assert response.status_code == 400
    assert "'classification' must be true" in response.json()["error"]
    assert set(labelled.probes().values()) == {200}


def test_v1_classifies_every_output(unlabelled):
    """V1 cannot choose outputs: a model with one that has no classes says so."""
    response = v1(unlabelled, {"instances": X.tolist(), "parameters": {"classification": True}})
    assert response.status_code == 400
    assert "output 'positive' is BOOL" in response.json()["error"]


# ---------------------------------------------------------------- the rules themselves


def test_the_specs_examples():
    """Triton's extension document: [1, 5, 10, 4] ranks 2, 1, ...; [1.1, 3.3, 0.5, 2.4]
    top-2 is 3.3 (index 1) and 2.4 (index 3), floats written as std::to_string does."""
    ints = classification.apply({"y": np.array([1, 5, 10, 4], np.uint32)}, {"y": 2}, None)
    assert ints["y"].tolist() == [b"10:2", b"5:1"]
    floats = np.array([[1.1, 3.3, 0.5, 2.4]], np.float32)
    labels = ["index_0_label", "index_1_label", "index_2_label", "index_3_label"]
    result = classification.apply({"y": floats}, {"y": 2}, labels)["y"]
    assert result.shape == (1, 2)
    assert result.tolist() == [[b"3.300000:1:index_1_label", b"2.400000:3:index_3_label"]]


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float64]
)
def test_every_numeric_datatype_ranks_by_value(dtype):
    array = np.array([[3, 0, 7, 1], [0, 9, 2, 5]], dtype=dtype)
    (row0, row1) = classification.apply({"y": array}, {"y": 4}, None)["y"].tolist()
    assert [int(s.split(b":")[1]) for s in row0] == [2, 0, 3, 1]
    assert [int(s.split(b":")[1]) for s in row1] == [1, 3, 2, 0]
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    extremes = np.array([info.min, info.max], dtype=dtype)
    (top,) = classification.apply({"y": extremes}, {"y": 1}, None)["y"].tolist()
    assert top.endswith(b":1")
    if np.dtype(dtype).kind in "iu":
        assert top == f"{info.max}:1".encode()  # integers as integers, exactly


def test_equal_values_keep_their_index_order():
    result = classification.apply({"y": np.array([2.0, 5.0, 5.0, 1.0])}, {"y": 3}, None)["y"]
    assert result.tolist() == [b"5.000000:1", b"5.000000:2", b"2.000000:0"]


def test_labels_file_rules(tmp_path):
    """One label per line (line i: class i), a trailing CR dropped; an index past the last
    line or on an empty line has no label, as in Triton."""
    assert classification.read_labels(tmp_path) is None
    (tmp_path / "labels.txt").write_bytes(b"cat\r\n\r\nbird\n")
    labels = classification.read_labels(tmp_path)
    assert labels == ["cat", "", "bird"]
    logits = np.array([[5.0, 4.0, 3.0, 2.0]])
    result = classification.apply({"y": logits}, {"y": 4}, labels)["y"].tolist()
    assert result == [[b"5.000000:0:cat", b"4.000000:1", b"3.000000:2:bird", b"2.000000:3"]]


def test_not_utf8_labels_stop_the_load(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(classification.ModelLoadError, match="not UTF-8"):
        classification.read_labels(tmp_path)


def test_a_scalar_output_and_too_many_classes_are_400s():
    from kserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match="scalar"):
        classification.apply({"y": np.array(1.0)}, {"y": 1}, None)
    with pytest.raises(InvalidInput, match="too large"):
        classification.apply({"y": np.zeros(classification.MAX_CLASSES + 1)}, {"y": 1}, None)
