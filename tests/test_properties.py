"""Property tests (hypothesis) for every codec.

For random shapes (0-d and empty dimensions included) and every supported datatype,
V1, /api/predict, V2 JSON, V2 binary and gRPC give exactly what the demo model gives in
torch (`x * 2`), and malformed variants of a valid request get a 4xx with a message.

REST runs in-process (the `client` fixture); gRPC runs the predictor's ModelInfer handler
in-process on serialised requests (`tests/grpc_inprocess.py`), plus a few examples against
a real server's gRPC port.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from predictor.datatypes import V2_TO_NUMPY
from predictor.grpc_wire import split_raw_contents, with_raw_contents
from tests.grpc_inprocess import GrpcStatus, model_infer, raw_request
from tests.serving import PredictorProcess

DATATYPES = list(V2_TO_NUMPY)
INPUT, OUTPUT = "input-0", "output-0"
INFER = "/v2/models/model/infer"
JSON = {"content-type": "application/json"}
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- strategies ---------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw, finite: bool, datatypes=DATATYPES) -> tuple[str, np.ndarray]:
    """A V2 datatype and a random array of it; `finite`: no NaN/Inf (what JSON can carry)."""
    datatype = draw(st.sampled_from(datatypes))
    dtype = V2_TO_NUMPY[datatype]
    elements = None
    if dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_nan=not finite, allow_infinity=not finite)
    return datatype, draw(hnp.arrays(dtype, draw(shapes), elements=elements))


def doubled(array: np.ndarray) -> np.ndarray:
    """What the demo model gives in torch."""
    with torch.inference_mode():
        return (torch.from_numpy(array.copy()) * 2).numpy()


def assert_json_data(data: list, expected: np.ndarray) -> None:
    """JSON output data is exactly `expected` once parsed back into its dtype (float32 is
    written as the shortest text that parses back to it), with non-finite floats as null."""
    flat = expected.reshape(-1)
    if flat.dtype.kind != "f":
        assert data == flat.tolist()
        return
    finite = np.isfinite(flat)
    assert [value is not None for value in data] == finite.tolist()
    parsed = np.array([0.0 if value is None else value for value in data], np.float64)
    assert parsed.astype(flat.dtype).tobytes() == np.where(finite, flat, 0).tobytes()


def flatten(nested) -> list:
    if not isinstance(nested, list):
        return [nested]
    return [value for item in nested for value in flatten(item)]


def v2_datatype_of(array: np.ndarray) -> str:
    return next(name for name, dtype in V2_TO_NUMPY.items() if dtype == array.dtype)


def v2_json_body(datatype: str, array: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": INPUT,
                "datatype": datatype,
                "shape": list(array.shape),
                "data": array.reshape(-1).tolist(),
            }
        ]
    }


def v2_binary_body(datatype: str, array: np.ndarray, binary_output: bool = True) -> tuple:
    raw = np.ascontiguousarray(array).tobytes()
    header = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": binary_output}}],
    }
    header_bytes = orjson.dumps(header)
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header_bytes)),
    }
    return header_bytes + raw, headers


def split_binary_response(response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


def assert_client_error(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    message = response.json().get("error") or response.json().get("message")
    assert isinstance(message, str) and message, response.text


@pytest.fixture(scope="module")
def http(client) -> TestClient:
    """The same app, with a server-side exception answered as the 500 a real server sends
    instead of raised into the test."""
    return TestClient(client.app, raise_server_exceptions=False)


# ---- REST: V2 JSON and binary --------------------------------------------------------------


@PROPERTY
@given(tensor=tensors(finite=True))
def test_v2_json_matches_torch(http, tensor):
    datatype, array = tensor
    response = http.post(INFER, content=orjson.dumps(v2_json_body(datatype, array)), headers=JSON)
    assert response.status_code == 200, response.text
    expected = doubled(array)
    (output,) = response.json()["outputs"]
    assert output["name"] == OUTPUT
    assert output["datatype"] == v2_datatype_of(expected)
    assert output["shape"] == list(expected.shape)
    assert_json_data(output["data"], expected)


@PROPERTY
@given(tensor=tensors(finite=False))
def test_v2_binary_matches_torch_bit_for_bit(http, tensor):
    datatype, array = tensor
    body, headers = v2_binary_body(datatype, array)
    response = http.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    expected = doubled(array)
    header, raw = split_binary_response(response)
    (output,) = header["outputs"]
    assert output["datatype"] == v2_datatype_of(expected)
    assert output["shape"] == list(expected.shape)
    assert output["parameters"]["binary_data_size"] == len(raw)
    assert raw == expected.tobytes()


@PROPERTY
@given(tensor=tensors(finite=False))
def test_v2_binary_in_json_out(http, tensor):
    """Binary input, JSON output: non-finite values come back as null."""
    datatype, array = tensor
    body, headers = v2_binary_body(datatype, array, binary_output=False)
    response = http.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert_json_data(response.json()["outputs"][0]["data"], doubled(array))


# ---- REST: V1 and /api/predict (untyped JSON; the demo model's signature says FP32) -------

finite_fp32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
v1_values = st.one_of(finite_fp32, st.integers(-(2**24), 2**24), st.booleans())


@PROPERTY
@given(
    array=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
        elements=finite_fp32,
    )
)
def test_v1_matches_torch(http, array):
    values = array.tolist()
    response = http.post("/v1/models/model:predict", json={"instances": values})
    if array.shape[0] == 0:
        assert_client_error(response)  # an empty batch
        return
    assert response.status_code == 200, response.text
    # JSON cannot carry dimensions after an empty one: [[]] is shape (1, 0), not (1, 0, 0).
    expected = doubled(np.array(values, dtype=np.float32))
    predictions = response.json()["predictions"]
    assert np.array(predictions, dtype=object).shape == expected.shape
    assert_json_data(flatten(predictions), expected)


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_v1_scalar_instance_matches_torch(http, key):
    response = http.post("/v1/models/model:predict", json={key: 3.0})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": 6.0}


@PROPERTY
@given(values=st.lists(v1_values.filter(lambda v: not isinstance(v, bool)), max_size=8))
def test_legacy_predict_matches_torch(http, values):
    response = http.post("/api/predict/", json={"values_list": values})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is False
    expected = doubled(np.asarray(values, dtype=np.float32))
    np.testing.assert_array_equal(np.array(body["result"]["tensor_list"], np.float32), expected)


# ---- REST: malformed variants get a 4xx with a message --------------------------------------


def _json_mutations(datatype: str, array: np.ndarray) -> dict:
    """Named ways to break a valid V2 JSON request; each must be a client error."""
    good = v2_json_body(datatype, array)
    entry = good["inputs"][0]
    extra = [*entry["data"], entry["data"][0] if entry["data"] else 1]

    def with_entry(**changes) -> dict:
        return {"inputs": [{**entry, **changes}]}

    return {
        "data does not fit shape": with_entry(data=extra),
        "unknown datatype": with_entry(datatype="FP128"),
        "BYTES datatype": with_entry(datatype="BYTES"),
        "negative dimension": with_entry(shape=[-1, *entry["shape"]]),
        "shape not a list": with_entry(shape="2x2"),
        "fractional dimension": with_entry(shape=[1.5]),
        "strings in data": with_entry(data=["x"], shape=[1]),
        "nulls in data": with_entry(
            data=[None] * max(1, len(entry["data"])), shape=[max(1, array.size)]
        ),
        "ragged data": with_entry(data=[[1, 2], [3]], shape=[3]),
        "unknown input name": with_entry(name="nope"),
        "missing shape": {"inputs": [{k: v for k, v in entry.items() if k != "shape"}]},
        "missing data": {"inputs": [{k: v for k, v in entry.items() if k != "data"}]},
        "input given twice": {"inputs": [entry, entry]},
        "no inputs": {"inputs": []},
        "inputs not a list": {"inputs": entry},
        "unknown output": {**good, "outputs": [{"name": "nope"}]},
        "id not a string": {**good, "id": 7},
        "parameters not an object": {**good, "parameters": [1]},
        "not an object": [good],
    }


@PROPERTY
@given(
    tensor=tensors(finite=True),
    mutation=st.sampled_from(sorted(_json_mutations("FP32", np.zeros(1)))),
)
def test_malformed_v2_json_is_a_client_error(http, tensor, mutation):
    body = _json_mutations(*tensor)[mutation]
    response = http.post(INFER, content=orjson.dumps(body), headers=JSON)
    assert_client_error(response)


@PROPERTY
@given(
    datatype=st.sampled_from(DATATYPES),
    value=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]),
)
def test_non_finite_json_literals_are_a_client_error(http, datatype, value):
    """JSON has no NaN/Infinity literals; a body with them is malformed JSON."""
    body = (
        f'{{"inputs":[{{"name":"{INPUT}","datatype":"{datatype}","shape":[1],"data":[{value}]}}]}}'
    )
    response = http.post(INFER, content=body.encode(), headers=JSON)
    if value == "1e999":  # valid JSON, a number too large for any datatype
        assert_client_error(response)
    else:
        assert_client_error(response)
        assert "malformed JSON" in response.json()["error"]


@PROPERTY
@given(
    # INT64/UINT64: test_json_64_bit_integers_are_exact and the reported cases below.
    datatype=st.sampled_from(
        [d for d in DATATYPES if V2_TO_NUMPY[d].kind in "iub" and d not in ("INT64", "UINT64")]
    ),
    value=st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_json_values_that_do_not_fit_the_datatype(http, datatype, value):
    """A JSON value is accepted only if the datatype holds it exactly, and then it is exact."""
    body = v2_json_body(datatype, np.zeros(1))
    body["inputs"][0]["data"] = [value]
    response = http.post(INFER, content=json.dumps(body), headers=JSON)
    dtype = V2_TO_NUMPY[datatype]
    fits = (
        (isinstance(value, int) or float(value).is_integer())
        and dtype.kind in "iu"
        and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max
    )
    if not fits:
        assert_client_error(response)
        return
    assert response.status_code == 200, response.text
    expected = doubled(np.array([int(value)], dtype))
    assert response.json()["outputs"][0]["data"] == expected.tolist()


@PROPERTY
@given(
    datatype_and_values=st.one_of(
        st.tuples(st.just("INT64"), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
        # UINT64 from 2**63 up: the reported cases below.
        st.tuples(st.just("UINT64"), st.lists(st.integers(0, 2**63 - 1), max_size=4)),
    )
)
def test_json_64_bit_integers_are_exact(http, datatype_and_values):
    datatype, values = datatype_and_values
    body = v2_json_body(datatype, np.zeros(len(values)))
    body["inputs"][0]["data"] = values
    response = http.post(INFER, content=json.dumps(body), headers=JSON)
    assert response.status_code == 200, response.text
    expected = doubled(np.array(values, V2_TO_NUMPY[datatype]))
    assert response.json()["outputs"][0]["data"] == expected.tolist()


@pytest.mark.parametrize(
    "datatype,values",
    [
        ("UINT64", [2**64 - 1]),  # 500: torch cannot take numpy.ulonglong
        ("UINT64", [2**63]),  # 500, the same
        ("UINT64", [2**63 + 1, 1]),  # 200 with [0, 2]: float64 lost the low bit
        ("UINT64", [2**64, 1]),  # out of range, but 200 with [0, 2]
        ("INT64", [2**63, 1]),  # out of range, but 200 with [0, 2]
        ("INT64", [float(2**63)]),  # out of range, but 200 with [0]
    ],
)
def test_json_64_bit_edges(http, datatype, values):
    """Exact when every value fits the datatype, else a 4xx."""
    body = v2_json_body(datatype, np.zeros(len(values)))
    body["inputs"][0]["data"] = values
    response = http.post(INFER, content=json.dumps(body), headers=JSON)
    info = np.iinfo(V2_TO_NUMPY[datatype])
    if all(info.min <= v <= info.max for v in values):
        assert response.status_code == 200, response.text
        expected = doubled(np.array(values, V2_TO_NUMPY[datatype]))
        assert response.json()["outputs"][0]["data"] == expected.tolist()
    else:
        assert_client_error(response)


def _binary_mutations(datatype: str, array: np.ndarray) -> dict:
    body, headers = v2_binary_body(datatype, array)
    length = int(headers["inference-header-content-length"])
    header = orjson.loads(body[:length])
    raw = body[length:]

    def rebuilt(new_header: dict, new_raw: bytes = raw) -> tuple:
        encoded = orjson.dumps(new_header)
        return encoded + new_raw, {**headers, "inference-header-content-length": str(len(encoded))}

    def with_size(size) -> tuple:
        entry = {**header["inputs"][0], "parameters": {"binary_data_size": size}}
        return rebuilt({**header, "inputs": [entry]})

    return {
        "header length not a number": (body, {**headers, "inference-header-content-length": "x"}),
        "header length zero": (body, {**headers, "inference-header-content-length": "0"}),
        "header length past the body": (
            body,
            {**headers, "inference-header-content-length": str(len(body) + 1)},
        ),
        "header length cuts the JSON": (
            body,
            {**headers, "inference-header-content-length": str(length - 1)},
        ),
        "size past the end": with_size(len(raw) + 8),
        "negative size": with_size(-1),
        "size not an integer": with_size("8"),
        "bytes after the last input": rebuilt(header, raw + b"\x00" * 8),
        "size does not fit the shape": rebuilt(
            {
                **header,
                "inputs": [
                    {
                        **header["inputs"][0],
                        "shape": [*array.shape, 2] if array.size else [1],
                    }
                ],
            }
        ),
        "no header length": (body, {"content-type": "application/octet-stream"}),
    }


@PROPERTY
@given(
    tensor=tensors(finite=False),
    mutation=st.sampled_from(sorted(_binary_mutations("FP32", np.zeros(1)))),
)
def test_malformed_v2_binary_is_a_client_error(http, tensor, mutation):
    body, headers = _binary_mutations(*tensor)[mutation]
    response = http.post(INFER, content=body, headers=headers)
    assert_client_error(response)


# ---- gRPC: the predictor's ModelInfer in-process ----------------------------------------------


def assert_grpc_output(response: pb.ModelInferResponse, array: np.ndarray) -> None:
    expected = doubled(array)
    (output,) = response.outputs
    assert output.name == OUTPUT
    assert output.datatype == v2_datatype_of(expected)
    assert list(output.shape) == list(expected.shape)
    assert response.raw_output_contents[0] == expected.tobytes()


@PROPERTY
@given(tensor=tensors(finite=False))
def test_grpc_raw_contents_match_torch_bit_for_bit(demo_model, tensor):
    datatype, array = tensor
    assert_grpc_output(model_infer(demo_model, raw_request("model", array, datatype)), array)


@PROPERTY
@given(tensor=tensors(finite=False), raw_first=st.booleans(), request_id=st.text(max_size=20))
def test_grpc_wire_split_reads_fields_in_any_order(demo_model, tensor, raw_first, request_id):
    """The raw contents are sliced out of the request bytes wherever they sit (a message's
    fields may come in any order: a concatenation of two messages is their merge)."""
    datatype, array = tensor
    full = raw_request("model", array, datatype)
    full.id = request_id
    full.outputs.add(name=OUTPUT)
    header = pb.ModelInferRequest()
    header.CopyFrom(full)
    header.ClearField("raw_input_contents")
    raw_only = pb.ModelInferRequest(raw_input_contents=full.raw_input_contents)
    parts = [raw_only.SerializeToString(), header.SerializeToString()]
    wire = b"".join(parts if raw_first else reversed(parts))

    message, raw = split_raw_contents(wire)
    assert message == header
    assert [bytes(r) for r in raw] == list(full.raw_input_contents)
    response = model_infer(demo_model, wire)
    assert response.id == request_id
    assert_grpc_output(response, array)


@PROPERTY
@given(wire=st.binary(max_size=200) | st.builds(lambda n: VALID_WIRE[:n], st.integers(0, 200)))
def test_grpc_wire_garbage_is_invalid_input_or_a_message(wire):
    """Random bytes and every truncation of a valid request: a message or InvalidInput."""
    try:
        message, raw = split_raw_contents(wire)
    except InvalidInput as error:
        assert str(error).startswith("malformed ModelInferRequest")
    else:
        assert isinstance(message, pb.ModelInferRequest)
        assert all(r.obj is wire for r in raw)  # views into the request, not copies


VALID_WIRE = raw_request(
    "model", np.arange(30, dtype=np.int16).reshape(5, 6), "INT16"
).SerializeToString()


def test_grpc_wire_response_is_protobufs_own_encoding():
    outputs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((0, 4)), np.array(True)]
    response = pb.ModelInferResponse(model_name="m", id="7")
    for i, array in enumerate(outputs):
        response.outputs.add(name=f"o{i}", datatype="FP32", shape=array.shape)
    expected = pb.ModelInferResponse()
    expected.CopyFrom(response)
    expected.raw_output_contents.extend(array.tobytes() for array in outputs)

    wire = with_raw_contents(response, outputs)
    assert pb.ModelInferResponse.FromString(wire) == expected
    assert wire == expected.SerializeToString()  # raw contents are the last field anyway


CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


@PROPERTY
@given(tensor=tensors(finite=False, datatypes=sorted(CONTENTS_FIELD)))
def test_grpc_typed_contents_match_torch(demo_model, tensor):
    datatype, array = tensor
    if datatype == "UINT64":
        array = np.asarray(array & np.uint64(2**63 - 1))  # 2**63 up: reported, see below
    request = pb.ModelInferRequest(model_name="model")
    entry = request.inputs.add(name=INPUT, datatype=datatype, shape=list(array.shape))
    getattr(entry.contents, CONTENTS_FIELD[datatype]).extend(array.reshape(-1).tolist())
    assert_grpc_output(model_infer(demo_model, request), array)


@pytest.mark.parametrize("values", [[2**63], [2**64 - 1, 1]])
def test_grpc_uint64_contents_edges(demo_model, values):
    request = pb.ModelInferRequest(model_name="model")
    entry = request.inputs.add(name=INPUT, datatype="UINT64", shape=[len(values)])
    entry.contents.uint64_contents.extend(values)
    assert_grpc_output(model_infer(demo_model, request), np.array(values, np.uint64))


def _grpc_mutations(datatype: str, array: np.ndarray) -> dict:
    def build(change) -> pb.ModelInferRequest:
        request = raw_request("model", array, datatype)
        change(request)
        return request

    def set_shape(shape):
        def change(request):
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(shape)

        return change

    return {
        "raw contents too long": build(
            lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0] + b"\0" * 8)
        ),
        "negative dimension": build(set_shape([-1, *array.shape])),
        "shape does not fit the contents": build(
            set_shape([*array.shape, 3] if array.size else [2])
        ),
        "unknown datatype": build(lambda r: setattr(r.inputs[0], "datatype", "FP128")),
        "BYTES datatype": build(lambda r: setattr(r.inputs[0], "datatype", "BYTES")),
        "unknown input name": build(lambda r: setattr(r.inputs[0], "name", "nope")),
        "input given twice": build(
            lambda r: (
                r.inputs.append(r.inputs[0]),
                r.raw_input_contents.append(r.raw_input_contents[0]),
            )
        ),
        "more raw contents than inputs": build(lambda r: r.raw_input_contents.append(b"")),
        "raw and typed contents": build(lambda r: r.inputs[0].contents.int_contents.append(1)),
        "unknown output": build(lambda r: r.outputs.add(name="nope")),
    }


@PROPERTY
@given(
    tensor=tensors(finite=False),
    mutation=st.sampled_from(sorted(_grpc_mutations("FP32", np.zeros(1)))),
)
def test_malformed_grpc_is_invalid_argument(demo_model, tensor, mutation):
    request = _grpc_mutations(*tensor)[mutation]
    with pytest.raises(GrpcStatus) as raised:
        model_infer(demo_model, request)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details


# ---- gRPC: a real server's port ----------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_stub():
    with PredictorProcess() as server, grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.slow
@settings(PROPERTY, max_examples=10)
@given(tensor=tensors(finite=False))
def test_real_server_grpc_matches_torch(grpc_stub, tensor):
    datatype, array = tensor
    response = grpc_stub.ModelInfer(raw_request("model", array, datatype), timeout=30)
    assert_grpc_output(response, array)


@pytest.mark.slow
@settings(PROPERTY, max_examples=5)
@given(
    tensor=tensors(finite=False),
    mutation=st.sampled_from(sorted(_grpc_mutations("FP32", np.zeros(1)))),
)
def test_real_server_grpc_malformed_is_invalid_argument(grpc_stub, tensor, mutation):
    with pytest.raises(grpc.RpcError) as raised:
        grpc_stub.ModelInfer(_grpc_mutations(*tensor)[mutation], timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details()
