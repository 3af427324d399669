"""Bounded resources and honest health: size limits, overload, failing models, metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from predictor.errors import Overloaded, PayloadTooLarge
from predictor.model import ModelOptions, TorchModel
from tests import toy_models

LIMIT = 1024 * 1024  # the client fixture's --max_request_bytes


def test_body_over_the_limit_is_413_before_it_is_read(client):
    body = b"[" + b"1," * LIMIT + b"1]"
    response = client.post(
        "/v1/models/model:predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "--max_request_bytes" in response.json()["error"]


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = client.post("/v2/models/model/infer", content=chunks())
    assert response.status_code == 413


def test_legacy_api_keeps_its_envelope_for_413(client):
    response = client.post("/api/predict/", content=b" " * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["error"] is True and "bytes" in response.json()["message"]


def test_tensor_element_limit(tmp_path):
    model = TorchModel("m", ModelOptions(max_tensor_elements=10))
    model.load()
    assert asyncio.run(model.infer({"input-0": np.ones(10, np.float32)}))["output-0"].sum() == 20
    with pytest.raises(PayloadTooLarge, match="11 elements; the limit is 10"):
        asyncio.run(model.infer({"input-0": np.ones(11, np.float32)}))


def test_overload_is_refused_at_once(tmp_path, monkeypatch):
    toy_models.save_state_dict(tmp_path, toy_models.Slow(), None)
    monkeypatch.setattr(toy_models.Slow, "delay_s", 0.3)
    model = TorchModel(
        "slow",
        ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:Slow", max_inflight=1),
    )
    model.load()

    async def two_at_once():
        x = {"input-0": np.ones(1, np.float32)}
        return await asyncio.gather(model.infer(x), model.infer(x), return_exceptions=True)

    first, second = asyncio.run(two_at_once())
    assert first["output-0"].tolist() == [2.0]
    assert isinstance(second, Overloaded) and "retry" in str(second)
    assert model.inflight == 0


def test_model_faults_never_change_readiness(tmp_path):
    """A model that raises on some inputs fails those requests alone, however many."""
    toy_models.save_state_dict(tmp_path, toy_models.FailsOnNegative(), None)
    model = TorchModel(
        "flaky",
        ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:FailsOnNegative"),
    )
    model.load()
    for _ in range(20):
        with pytest.raises(KeyError):
            asyncio.run(model.infer({"input-0": -np.ones(2, np.float32)}))
        assert asyncio.run(model.healthy())
    assert asyncio.run(model.infer({"input-0": np.ones(2, np.float32)}))["output-0"].tolist() == [
        2,
        2,
    ]


def test_client_errors_do_not_count_against_health(client, demo_model):
    for _ in range(10):
        assert (
            client.post(
                "/v2/models/model/infer",
                json={"inputs": [{"name": "bad", "datatype": "FP32", "shape": [1], "data": [1]}]},
            ).status_code
            == 400
        )
    assert client.get("/v2/health/ready").status_code == 200


def test_metrics_count_requests_by_protocol_and_status(client):
    client.post("/v1/models/model:predict", json={"instances": [1]})
    client.post("/v1/models/model:predict", json={"instances": []})
    client.post("/api/predict/", json={"values_list": [1]})
    text = client.get("/metrics").text
    assert 'predictor_requests_total{model="model",protocol="v1",status="200"}' in text
    assert 'predictor_requests_total{model="model",protocol="v1",status="400"}' in text
    assert 'predictor_requests_total{model="model",protocol="legacy",status="200"}' in text
    assert "predictor_request_duration_seconds_bucket" in text
    assert 'predictor_model_healthy{model="model"} 1.0' in text


def test_model_fault_is_a_500_with_a_message_and_a_log_line(tmp_path, capsys):
    """A model bug (not the client's fault) answers 500 in the endpoint's format, and the
    request is still logged and counted; the server goes on."""
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette

    from predictor.edge import Edge
    from predictor.routes import Routes

    toy_models.save_state_dict(tmp_path, toy_models.FailsOnNegative(), None)
    model = TorchModel(
        "flaky",
        ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:FailsOnNegative"),
    )
    model.load()

    edge = Edge(
        Starlette(), Routes({"flaky": model}), max_request_bytes=1 << 20, model_name="flaky"
    )
    with TestClient(edge) as client:
        failed = client.post(
            "/v2/models/flaky/infer",
            json={"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1], "data": [-1]}]},
        )
        legacy = client.post("/api/predict/", json={"values_list": [-1.0]})
        fine = client.post("/v1/models/flaky:predict", json={"instances": [1.0]})
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error: KeyError: 'internal lookup failed'"}
    assert legacy.status_code == 500 and legacy.json()["error"] is True
    assert fine.json() == {"predictions": [2.0]}
    assert '"status":500' in capsys.readouterr().out


def test_grpc_status_for_each_refusal_and_fault(tmp_path, caplog, monkeypatch):
    """ModelInfer ends a refused or failed call with the gRPC status of its HTTP status:
    too large RESOURCE_EXHAUSTED, overload UNAVAILABLE (clients retry it), a model bug
    INTERNAL with its message and a logged traceback."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from tests.grpc_inprocess import (
        GrpcStatus,
        ServicerContext,
        model_infer,
        model_infer_handler,
        raw_request,
    )

    small = TorchModel("small", ModelOptions(max_tensor_elements=10))
    small.load()
    with pytest.raises(GrpcStatus) as too_large:
        model_infer(small, raw_request("small", np.ones(11, np.float32)))
    assert too_large.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit is 10" in too_large.value.details

    toy_models.save_state_dict(tmp_path, toy_models.FailsOnNegative(), None)
    flaky = TorchModel(
        "flaky",
        ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:FailsOnNegative"),
    )
    flaky.load()
    with pytest.raises(GrpcStatus) as fault:
        model_infer(flaky, raw_request("flaky", -np.ones(1, np.float32)))
    assert fault.value.code == grpc.StatusCode.INTERNAL
    assert fault.value.details == "internal error: KeyError: 'internal lookup failed'"
    assert any(r.name == "predictor" and r.exc_info for r in caplog.records)

    monkeypatch.setattr(toy_models.Slow, "delay_s", 0.3)
    slow_dir = tmp_path / "slow"
    toy_models.save_state_dict(slow_dir, toy_models.Slow(), None)
    slow = TorchModel(
        "slow",
        ModelOptions(model_dir=str(slow_dir), model_class="tests.toy_models:Slow", max_inflight=1),
    )
    slow.load()
    handler = model_infer_handler(slow)
    wire = raw_request("slow", np.ones(1, np.float32)).SerializeToString()
    contexts = [ServicerContext(), ServicerContext()]

    async def two_at_once():
        return await asyncio.gather(*(handler.handle(wire, c) for c in contexts))

    first, _ = asyncio.run(two_at_once())
    assert contexts[0].code is None
    assert np.frombuffer(pb.ModelInferResponse.FromString(first).raw_output_contents[0], "<f4") == 2
    assert contexts[1].code == grpc.StatusCode.UNAVAILABLE
    assert "retry" in contexts[1].details


def test_a_model_that_waits_stays_off_the_event_loop(tmp_path, monkeypatch):
    """The cost that decides inline-or-thread counts time a model waits (here, sleeps) as
    well as compute, so a slow model keeps going to a thread after many calls."""
    monkeypatch.setattr(toy_models.Slow, "delay_s", 0.02)
    toy_models.save_state_dict(tmp_path, toy_models.Slow(), None)
    model = TorchModel(
        "slow", ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:Slow")
    )
    model.load()
    x = {"input-0": np.ones(4, np.float32)}
    for _ in range(10):
        asyncio.run(model.infer(x))
    assert model.cost.predict_us(list(x.values())) >= 15_000


def test_out_of_memory_on_one_request_is_that_requests_error(tmp_path, monkeypatch):
    from kserve.errors import InferenceError

    toy_models.save_state_dict(tmp_path, toy_models.OutOfMemoryOnLarge(), None)
    model = TorchModel(
        "oom",
        ModelOptions(model_dir=str(tmp_path), model_class="tests.toy_models:OutOfMemoryOnLarge"),
    )
    model.load()
    with pytest.raises(InferenceError, match="out of memory"):
        asyncio.run(model.infer({"input-0": np.ones(5000, np.float32)}))
    assert asyncio.run(model.healthy()) and model.health.live  # the small input still runs
    monkeypatch.setattr(toy_models.OutOfMemoryOnLarge, "stuck", True)
    with pytest.raises(InferenceError, match="out of memory"):
        asyncio.run(model.infer({"input-0": np.ones(5000, np.float32)}))
    assert model.health.live  # once may be other requests' memory: not yet
    with pytest.raises(InferenceError, match="out of memory"):
        asyncio.run(model.infer({"input-0": np.ones(5, np.float32)}))
    assert not model.health.live and "warm-up input" in model.health.broken
    assert not asyncio.run(model.healthy())


def test_kserve_routes_answer_413_for_a_chunked_body_over_the_limit(client):
    """The limit is enforced while KServe's own routes read the body, with its status."""

    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = client.post("/v1/models/model:explain", content=chunks())
    assert response.status_code == 413
    assert "--max_request_bytes" in response.json()["error"]
