"""OpenTelemetry traces: a real predictor process exporting over OTLP/HTTP to a real receiver
started by the test (tests/otlp_receiver.py, decoding the protobuf export), with the caller's
W3C traceparent continued and the span tree checked, over REST and gRPC."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from predictor import tracing
from tests.otlp_receiver import OTLPReceiver
from tests.serving import PredictorProcess

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
STATUS_ERROR = 2
CHILDREN = ["decode", "queue", "forward", "encode"]


@pytest.fixture(scope="module")
def traced():
    """(receiver, server): the server exports to the receiver, flushing every 50 ms."""
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "torch-predictor-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with PredictorProcess(env=env) as server:
            yield receiver, server


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def tree(spans, trace_id: str):
    """(the server span, its children by name) of one trace."""
    mine = [s for s in spans if s.trace_id == trace_id]
    [root] = [s for s in mine if s.kind == SERVER_KIND]
    children = {s.name: s for s in mine if s.parent_span_id == root.span_id}
    return root, children


def test_a_rest_request_continues_the_callers_trace_with_its_stages(traced):
    receiver, server = traced
    trace_id, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]
    }
    response = requests.post(
        server.http_url + "/v2/models/model/infer",
        json=body,
        headers={"traceparent": traceparent(trace_id, caller), "X-Request-Id": "traced-1"},
        timeout=10,
    )
    assert response.status_code == 200
    spans = receiver.wait_for(
        lambda spans: len([s for s in spans if s.trace_id == trace_id]) == 1 + len(CHILDREN)
    )
    root, children = tree(spans, trace_id)
    assert root.name == "POST /v2/models/model/infer"
    assert root.parent_span_id == caller  # the caller's span is the parent
    assert root.attributes == {
        "predictor.protocol": "v2",
        "predictor.model": "model",
        "predictor.status": 200,
        "http.response.status_code": 200,
        "predictor.request_id": "traced-1",
        "predictor.rows": 2,
        "predictor.batch_rows": 2,
    }
    assert root.resource["service.name"] == "torch-predictor-test"
    assert sorted(children) == sorted(CHILDREN)
    # The stages follow one another inside the request's span.
    order = [children[name] for name in CHILDREN]
    assert root.start_ns <= order[0].start_ns
    for before, after in zip(order, order[1:], strict=False):
        assert before.end_ns <= after.start_ns + 1000  # 1 µs of clock rounding
    assert order[-1].end_ns <= root.end_ns
    assert children["forward"].attributes == {"batch_rows": 2}


def test_a_grpc_request_is_traced_from_its_metadata(traced):
    receiver, server = traced
    trace_id, caller = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    request = pb.ModelInferRequest(model_name="model")
    request.inputs.add(name="input-0", datatype="FP32", shape=[3])
    request.raw_input_contents.append(np.ones(3, np.float32).tobytes())
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))
    stub.ModelInfer(request, timeout=10, metadata=(("traceparent", traceparent(trace_id, caller)),))
    spans = receiver.wait_for(
        lambda spans: len([s for s in spans if s.trace_id == trace_id]) == 1 + len(CHILDREN)
    )
    root, children = tree(spans, trace_id)
    assert root.name == "inference.GRPCInferenceService/ModelInfer"
    assert root.parent_span_id == caller
    assert root.attributes["predictor.protocol"] == "grpc"
    assert root.attributes["rpc.grpc.status_code"] == 0
    assert sorted(children) == sorted(CHILDREN)


def test_failures_are_traced_with_their_status_and_probes_make_no_spans(traced):
    receiver, server = traced
    trace_id = "11111111111111111111111111111111"
    bad = requests.post(
        server.http_url + "/v2/models/model/infer",
        json={"inputs": [{"name": "input-0"}]},
        headers={"traceparent": traceparent(trace_id, "2222222222222222")},
        timeout=10,
    )
    assert bad.status_code == 400
    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/model", "/metrics"):
        assert requests.get(server.http_url + path, timeout=10).status_code == 200
    spans = receiver.wait_for(lambda spans: any(s.trace_id == trace_id for s in spans))
    [root] = [s for s in spans if s.trace_id == trace_id]  # no stages: decoding failed
    assert root.attributes["predictor.status"] == 400
    assert "predictor.error" in root.attributes
    assert root.status_code != STATUS_ERROR  # a client's error is not the server's
    # Only inference requests make spans (and FastAPI's own telemetry stays off).
    assert {s.name for s in spans if s.kind == SERVER_KIND} <= {
        "POST /v2/models/model/infer",
        "inference.GRPCInferenceService/ModelInfer",
    }


@pytest.mark.parametrize(
    "environ, wanted",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(environ, wanted):
    assert tracing.wanted(environ) is wanted


def test_without_the_variables_no_span_is_made():
    """Off, the request path's calls into tracing do nothing (one ContextVar read)."""
    assert tracing._tracer is None  # this test process never configured it
    assert tracing.start_request("POST /x", {}, "v2") is None
    tracing.child("decode", 0.0, 1.0)  # no span to attach to: nothing happens
