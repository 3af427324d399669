"""Random shapes and datatypes at real servers whose models have fixed, dynamic and
bounded dimensions (TorchScript + model.json, torch.export, state dict + model.json),
over V1, V2 JSON, V2 binary and gRPC: never a 5xx, never a change in readiness, and an
answer exactly when the input fits the signature."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np
import orjson
import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from predictor.datatypes import V2_TO_NUMPY
from tests import toy_models
from tests.grpc_inprocess import raw_request
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
READY = {
    "/v2/health/ready": 200,
    "/v2/health/live": 200,
    "/v2/models/model/ready": 200,
    "/v1/models/model": 200,
}


@dataclass
class Served:
    server: PredictorProcess
    name: str  # the input's name
    width: int | None  # the fixed second dimension, None: dynamic
    batch: tuple[int, int | None]  # bounds of the first dimension
    integer_input: bool = False
    length: tuple[int, int | None] = (0, None)  # bounds of a dynamic second dimension

    def fits(self, shape: tuple[int, ...], datatype: str | None) -> bool:
        if len(shape) != 2 or (self.width is not None and shape[1] != self.width):
            return False
        for size, (low, high) in zip(shape, (self.batch, self.length), strict=True):
            if size < low or (high is not None and size > high):
                return False
        # Floats never turn into the token ids of an integer input; anything turns into floats.
        return not (self.integer_input and datatype is not None and datatype.startswith("FP"))


@pytest.fixture(scope="module", params=["torchscript-fixed", "export-bounded", "state-dict"])
def served(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    extra: list[str] = []
    if request.param == "torchscript-fixed":
        toy_models.save_torchscript(
            directory, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE
        )
        spec = ("x", 4, (0, None))
    elif request.param == "export-bounded":
        batch = torch.export.Dim("batch", min=1, max=8)
        toy_models.save_bounded_export(
            directory, toy_models.seeded_affine(), (torch.zeros(2, 4),), ({0: batch},)
        )
        spec = ("x", 4, (1, 8))
    else:
        toy_models.save_state_dict(directory, toy_models.RowSum(), toy_models.ROW_SUM_SIGNATURE)
        extra = ["--model_class", "tests.toy_models:RowSum"]
        spec = ("x", None, (0, None))
    with PredictorProcess(directory, extra_args=extra) as server:
        yield Served(server, *spec)
        assert server.probes() == READY
        assert "Traceback" not in server.logs()


@pytest.fixture(scope="module")
def token_ids(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokens")
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=4)
    length = torch.export.Dim("length", min=1, max=6)
    example = (torch.zeros(2, 3, dtype=torch.int64),)
    toy_models.save_bounded_export(
        directory, toy_models.TokenClassifier().eval(), example, ({0: batch, 1: length},)
    )
    with PredictorProcess(directory) as server:
        yield Served(server, "ids", None, (1, 4), integer_input=True, length=(1, 6))
        assert server.probes() == READY


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=10)


@st.composite
def tensors(draw) -> tuple[str, np.ndarray]:
    """Any datatype and shape; values 0..3, valid in every datatype (token ids too)."""
    datatype = draw(st.sampled_from(list(V2_TO_NUMPY)))
    dtype = V2_TO_NUMPY[datatype]
    shape = draw(shapes)
    values = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 3)))
    return datatype, (values > 0 if dtype.kind == "b" else values.astype(dtype))


def answered(model: Served, status: int, fits: bool, text: str) -> None:
    assert status < 500, text
    assert (status == 200) == fits, text
    if status != 200:
        assert "error" in text


def send(model: Served, protocol: str, datatype: str, array: np.ndarray) -> None:
    url = f"{model.server.http_url}"
    if protocol == "v1":
        body = {"instances": array.tolist()}
        answer = requests.post(f"{url}/v1/models/model:predict", json=body, timeout=10)
        sent = np.asarray(body["instances"]).shape  # JSON loses dimensions after a 0
        fits = model.fits(sent, None) and len(sent) > 0 and sent[0] > 0
        answered(model, answer.status_code, fits, answer.text)
        return
    entry = {"name": model.name, "datatype": datatype, "shape": list(array.shape)}
    if protocol == "v2-json":
        answer = requests.post(
            f"{url}/v2/models/model/infer",
            json={"inputs": [{**entry, "data": array.reshape(-1).tolist()}]},
            timeout=10,
        )
    elif protocol == "v2-binary":
        raw = np.ascontiguousarray(array).tobytes()
        header = orjson.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": len(raw)}}]})
        answer = requests.post(
            f"{url}/v2/models/model/infer",
            data=header + raw,
            headers={"inference-header-content-length": str(len(header))},
            timeout=10,
        )
    else:
        request = raw_request("model", array, datatype)
        request.inputs[0].name = model.name
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(model.server.grpc_target))
        try:
            stub.ModelInfer(request, timeout=10)
            status = 200
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            status = 400
        answered(model, status, model.fits(array.shape, datatype), f"gRPC error {status}")
        return
    answered(model, answer.status_code, model.fits(array.shape, datatype), answer.text)


PROTOCOLS = ["v1", "v2-json", "v2-binary", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@PROPERTY
@given(tensor=tensors())
def test_random_inputs_get_an_answer_or_a_4xx(served, protocol, tensor):
    send(served, protocol, *tensor)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@PROPERTY
@given(tensor=tensors())
def test_random_token_ids_get_an_answer_or_a_4xx(token_ids, protocol, tensor):
    send(token_ids, protocol, *tensor)
