"""preprocess -> predict -> postprocess is the one path of every protocol, so a subclass
that customises a hook changes V1, V2, /api/predict and gRPC alike."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from starlette.applications import Starlette

from predictor.edge import Edge
from predictor.model import ModelOptions, TorchModel
from predictor.routes import Routes
from tests.grpc_inprocess import model_infer, raw_request


class PlusOneThenNegate(TorchModel):
    """The demo model (x*2) wrapped in hooks: -(2 * (x + 1))."""

    async def preprocess(self, payload, headers=None):
        return {name: array + 1 for name, array in payload.items()}

    async def postprocess(self, result, headers=None, response_headers=None):
        return {name: -array for name, array in result.items()}


def edge_for(model: TorchModel) -> Edge:
    """The predictor's HTTP edge serving one model (other paths: an empty Starlette app)."""
    return Edge(Starlette(), Routes({model.name: model}), max_request_bytes=1 << 20, model_name="x")


def grpc_infer(model: TorchModel, request: pb.ModelInferRequest) -> list[float]:
    """ModelInfer through the predictor's handler in-process; the FP32 output values."""
    response = model_infer(model, request)
    return np.frombuffer(response.raw_output_contents[0], np.float32).tolist()


def test_hooks_apply_to_every_protocol():
    model = PlusOneThenNegate("hooked", ModelOptions())
    model.load()
    with TestClient(edge_for(model)) as client:
        v1 = client.post("/v1/models/hooked:predict", json={"instances": [1.0, 2.0]})
        v2 = client.post(
            "/v2/models/hooked/infer",
            json={
                "inputs": [{"name": "input-0", "datatype": "INT32", "shape": [2], "data": [1, 2]}]
            },
        )
        legacy = client.post("/api/predict/", json={"values_list": [1, 2]})
    assert v1.json() == {"predictions": [-4.0, -6.0]}
    assert v2.json()["outputs"][0]["data"] == [-4, -6]
    assert legacy.json() == {"error": False, "result": {"tensor_list": [-4, -6]}}

    assert grpc_infer(model, raw_request("hooked", np.array([1, 2], np.float32))) == [-4.0, -6.0]


def test_models_may_write_to_their_inputs(tmp_path):
    """Inputs decoded from raw bytes (gRPC, the binary extension) are writable memory of
    their own, so an in-place model neither fails nor touches the request."""
    import warnings

    import orjson

    from tests import toy_models

    toy_models.save_torchscript(tmp_path, toy_models.InPlaceDoubler(), None)
    model = TorchModel("inplace", ModelOptions(model_dir=str(tmp_path)))
    model.load()
    values = np.array([1, 2], np.float32)
    raw = values.tobytes()
    wire = raw_request("inplace", values).SerializeToString()
    sent = bytes(bytearray(wire))  # a copy, to compare with after the call
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on read-only numpy memory
        response = model_infer(model, wire)
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [2.0, 4.0]
    assert wire == sent

    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    with TestClient(edge_for(model)) as client:
        answer = client.post(
            "/v2/models/inplace/infer",
            content=header + raw,
            headers={"inference-header-content-length": str(len(header))},
        )
    assert answer.json()["outputs"][0]["data"] == [2.0, 4.0]
