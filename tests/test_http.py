"""Every REST path of the predictor, in-process through KServe's own app (TestClient)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

JSON = {"content-type": "application/json"}


def doubled(values, dtype=None):
    """What the demo model gives in torch."""
    return (torch.tensor(values, dtype=dtype) * 2).tolist()


# ---- V1 ----------------------------------------------------------------------------------


def test_v1_predict_instances(client):
    response = client.post("/v1/models/model:predict", json={"instances": [[1.5, 2], [3, 4]]})
    assert response.status_code == 200
    assert response.json() == {"predictions": doubled([[1.5, 2], [3, 4]])}


def test_v1_predict_inputs_key(client):
    response = client.post("/v1/models/model:predict", json={"inputs": [1, 2, 3]})
    assert response.json() == {"predictions": [2.0, 4.0, 6.0]}


def test_v1_model_ready(client):
    response = client.get("/v1/models/model")
    assert response.status_code == 200
    assert response.json()["ready"] is True


def test_request_id_is_returned(client):
    response = client.post(
        "/v1/models/model:predict", json={"instances": [1]}, headers={"X-Request-Id": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.post("/v1/models/model:predict", json={"instances": [1]})
    assert generated.headers["x-request-id"] != response.headers["x-request-id"]
    assert (
        generated.headers["x-request-id"]
        != client.post("/v1/models/model:predict", json={"instances": [1]}).headers["x-request-id"]
    )


# ---- V2 JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "datatype,data",
    [
        ("FP32", [1.5, -2.25, 3.0, 4.0]),
        ("FP64", [1e-300, 2.5, -3.0, 4.0]),
        ("FP16", [0.5, 1.0, -2.0, 4.0]),
        ("INT8", [-100, 0, 1, 63]),
        ("INT16", [-3, 0, 1, 300]),
        ("INT32", [-3, 0, 1, 70000]),
        ("INT64", [-(2**40), 0, 1, 2**40]),
        ("UINT8", [0, 1, 100, 127]),
        ("UINT16", [0, 1, 2, 30000]),
        ("UINT32", [0, 1, 2, 2**30]),
        ("UINT64", [0, 1, 2, 2**40]),
        ("BOOL", [True, False, True, True]),
    ],
)
def test_v2_json_every_datatype(client, datatype, data):
    from predictor.datatypes import V2_TO_NUMPY

    body = {"inputs": [{"name": "input-0", "datatype": datatype, "shape": [2, 2], "data": data}]}
    response = client.post("/v2/models/model/infer", json=body, headers=JSON)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    expected = (torch.from_numpy(np.array(data, dtype=V2_TO_NUMPY[datatype])) * 2).numpy()
    assert output["name"] == "output-0"
    assert output["shape"] == [2, 2]
    assert output["datatype"] == {"bool": "INT64"}.get(str(expected.dtype), output["datatype"])
    np.testing.assert_array_equal(np.array(output["data"]), expected.reshape(-1))


def test_v2_json_nested_data_and_id(client):
    body = {
        "id": "req-7",
        "inputs": [
            {"name": "input-0", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
        ],
    }
    response = client.post("/v2/models/model/infer", json=body)
    assert response.json()["id"] == "req-7"
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_v2_json_without_content_type_is_read_as_json(client):
    """tritonclient sends JSON bodies without a content type; they must still work."""
    body = orjson.dumps(
        {"inputs": [{"name": "input-0", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]}
    )
    response = client.post("/v2/models/model/infer", content=body, headers={"content-type": ""})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2, 4, 6]


def test_v2_scalar_and_empty_tensors(client):
    scalar = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [], "data": [3]}]}
    assert client.post("/v2/models/model/infer", json=scalar).json()["outputs"][0] == {
        "name": "output-0",
        "datatype": "FP32",
        "shape": [],
        "data": [6.0],
    }
    empty = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [0, 3], "data": []}]}
    output = client.post("/v2/models/model/infer", json=empty).json()["outputs"][0]
    assert output["shape"] == [0, 3] and output["data"] == []


# ---- V2 binary extension ---------------------------------------------------------------------


def binary_request(
    array: np.ndarray, datatype: str, binary_output: bool = True
) -> tuple[bytes, dict]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": binary_output},
        }
    )
    headers = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return header + array.tobytes(), headers


def split_binary_response(response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


@pytest.mark.parametrize("datatype,dtype", [("FP32", "<f4"), ("INT64", "<i8"), ("FP16", "<f2")])
def test_v2_binary_in_and_out(client, datatype, dtype):
    array = np.arange(12, dtype=dtype).reshape(3, 4)
    body, headers = binary_request(array, datatype)
    response = client.post("/v2/models/model/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header, data = split_binary_response(response)
    output = header["outputs"][0]
    assert output["shape"] == [3, 4] and output["datatype"] == datatype
    np.testing.assert_array_equal(np.frombuffer(data, dtype).reshape(3, 4), array * 2)


def test_v2_binary_in_json_out(client):
    array = np.array([1.0, 2.0], dtype="<f4")
    body, headers = binary_request(array, "FP32", binary_output=False)
    response = client.post("/v2/models/model/infer", content=body, headers=headers)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0]


def test_v2_bool_binary(client):
    array = np.array([True, False, True])
    body, headers = binary_request(array, "BOOL")
    header, data = split_binary_response(
        client.post("/v2/models/model/infer", content=body, headers=headers)
    )
    assert header["outputs"][0]["datatype"] == "INT64"  # torch: bool * 2 is int64
    assert np.frombuffer(data, "<i8").tolist() == [2, 0, 2]


def test_requested_output_binary_flag(client):
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2], "data": [1, 2]}],
        "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
    }
    header, data = split_binary_response(client.post("/v2/models/model/infer", json=body))
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(data, "<f4").tolist() == [2.0, 4.0]


# ---- metadata and health ----------------------------------------------------------------------


def test_v2_metadata_names_real_types(client):
    metadata = client.get("/v2/models/model").json()
    assert metadata["name"] == "model"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "FP32", "shape": [-1]}]


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2/models/model/ready", "/"]
)
def test_health_endpoints(client, path):
    assert client.get(path).status_code == 200


def test_metrics_endpoint(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "request_predict_seconds" in response.text or "python_info" in response.text


# ---- the original /api/predict -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/predict", "/api/predict/"])
def test_legacy_api_keeps_integers(client, path):
    response = client.post(path, json={"values_list": [1, 2, 3, 4]})
    assert response.status_code == 200
    assert response.content == b'{"error":false,"result":{"tensor_list":[2,4,6,8]}}'


def test_legacy_api_floats(client):
    response = client.post("/api/predict/", json={"values_list": [0.5, 1.25]})
    assert response.json() == {"error": False, "result": {"tensor_list": [1.0, 2.5]}}


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"values": [1]}, "values_list"),
        ({"values_list": "1,2"}, "list of numbers"),
        ({"values_list": [1, "a"]}, "strings"),
        ({"values_list": [1, None]}, "nulls"),
        ({"values_list": [[1], [1, 2]]}, "ragged"),
        ({"values_list": [True, False]}, "booleans"),
        ([1, 2], "values_list"),
    ],
)
def test_legacy_api_validation_errors(client, body, fragment):
    response = client.post("/api/predict/", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] is True and fragment in payload["message"]


def test_legacy_api_malformed_json(client):
    response = client.post("/api/predict/", content=b"{not json", headers=JSON)
    assert response.status_code == 422
    assert "malformed JSON" in response.json()["message"]


# ---- bad input: a clear 4xx, never a 500 -------------------------------------------------------


def v2(inputs) -> dict:
    return {"inputs": inputs}


BAD_V2 = [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, '"inputs" list'),
    (orjson.dumps({"inputs": []}), 400, "non-empty list"),
    (orjson.dumps(v2([{"name": "input-0", "shape": [1], "data": [1]}])), 400, "missing 'datatype'"),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "FP32", "shape": [3], "data": [1, 2]}])),
        400,
        "needs 3 values, but data has 2",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "FP99", "shape": [1], "data": [1]}])),
        400,
        "unknown datatype 'FP99'",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["a"]}])),
        400,
        "holds strings or bytes (BYTES), but the model takes numeric tensors",
    ),
    (
        orjson.dumps(v2([{"name": "wrong", "datatype": "FP32", "shape": [1], "data": [1]}])),
        400,
        "unknown input 'wrong'",
    ),
    (
        orjson.dumps(
            v2([{"name": "input-0", "datatype": "FP32", "shape": [2], "data": [[1], [1, 2]]}])
        ),
        400,
        "ragged",
    ),
    (
        orjson.dumps(
            v2([{"name": "input-0", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}])
        ),
        400,
        "must be numbers",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "INT8", "shape": [1], "data": [300]}])),
        400,
        "out of range for INT8",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "INT32", "shape": [1], "data": [1.5]}])),
        400,
        "takes integers",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "BOOL", "shape": [1], "data": [1]}])),
        400,
        "true/false",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "FP32", "shape": [-1], "data": [1]}])),
        400,
        "non-negative integers",
    ),
    (
        orjson.dumps(v2([{"name": "input-0", "datatype": "FP32", "shape": [1], "data": [1]}] * 2)),
        400,
        "more than once",
    ),
    (
        orjson.dumps(
            {
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1], "data": [1]}],
                "outputs": [{"name": "nope"}],
            }
        ),
        400,
        "unknown output 'nope'",
    ),
]


@pytest.mark.parametrize("body,status,fragment", BAD_V2)
def test_v2_bad_input_gets_a_clear_4xx(client, body, status, fragment):
    response = client.post("/v2/models/model/infer", content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_v2_wrong_content_type(client):
    response = client.post(
        "/v2/models/model/infer", content=b"a=1", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert "text/plain" in response.json()["error"]


def test_v2_octet_stream_without_header_length(client):
    response = client.post(
        "/v2/models/model/infer",
        content=b"\x00" * 8,
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


@pytest.mark.parametrize(
    "length,extra,fragment",
    [
        ("abc", b"", "not an integer"),
        ("100000", b"", "does not fit a body"),
        (None, b"\x00" * 4, "runs past the end"),
        (None, b"\x00" * 20, "bytes after the last binary input"),
    ],
)
def test_v2_bad_binary_framing(client, length, extra, fragment):
    header = orjson.dumps(
        v2(
            [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        )
    )
    payload = extra if extra else b"\x00" * 16
    headers = {"inference-header-content-length": length or str(len(header))}
    response = client.post("/v2/models/model/infer", content=header + payload, headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_v2_binary_size_disagrees_with_shape(client):
    header = orjson.dumps(
        v2(
            [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [3],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        )
    )
    response = client.post(
        "/v2/models/model/infer",
        content=header + b"\x00" * 8,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 400
    assert "needs 12 bytes" in response.json()["error"]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"instances": []}, "empty"),
        ({"instances": [[1, 2], [3]]}, "ragged"),
        ({"instances": ["x"]}, "holds strings or bytes (BYTES)"),
        ({"other": [1]}, '"instances" or "inputs"'),
        ({"instances": [1], "inputs": [1]}, "exactly one"),
    ],
)
def test_v1_bad_input(client, body, fragment):
    response = client.post("/v1/models/model:predict", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_unknown_model_is_404(client):
    for path in ("/v1/models/nope:predict", "/v2/models/nope/infer"):
        response = client.post(path, json={"instances": [1]})
        assert response.status_code == 404
        assert "nope" in response.json()["error"]
    assert client.get("/v2/models/nope").status_code == 404


def test_legacy_api_asks_for_numbers_only(client):
    """/api/predict refuses booleans, so its message must not offer them."""
    response = client.post("/api/predict/", json={"values_list": ["a", "b"]})
    assert response.status_code == 422
    assert response.json()["message"] == '"values_list": values must be numbers, not strings'
