"""OpenTelemetry traces of inference requests, made by the predictor itself.

KServe's Python server makes no spans, and the predictor answers inference requests at its
own edge, so the spans are made here. On when the standard variables say so (KServe sets
them from the InferenceService's `spec.tracing`): `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, `OTEL_TRACES_EXPORTER` unset or `otlp`,
`OTEL_SDK_DISABLED` not `true`. Spans go out over OTLP/HTTP (protobuf) from a batch span
processor; the SDK reads the rest itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`/`_ARG` (parent-based always-on by default), `OTEL_BSP_*`, the
exporter's headers and timeout. Off, every call here is one ContextVar read.

Per inference request, REST or gRPC, one SERVER span ("POST /v2/models/{model}/infer",
"inference.GRPCInferenceService/ModelInfer"), continuing the caller's W3C `traceparent`,
with children `decode`, `queue`, `forward` and `encode` made after the fact from the timings
the request path takes anyway (so tracing adds no clock reads to it). Attributes: the
model, protocol, status, request id, rows and the batch's rows. Health, metadata and
metrics requests make no spans.

The tracer provider is the predictor's own, not the global one: FastAPI's built-in
telemetry, which would make a span of its own for every request it sees (/metrics and
health probes included) once a global provider is set, stays off.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger("predictor")

_tracer: Any = None  # an opentelemetry Tracer once configure() turned tracing on
_current: ContextVar[Any] = ContextVar("predictor_server_span", default=None)
# perf_counter seconds -> epoch nanoseconds, for spans made after the fact.
_EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()


def wanted(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the standard variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "otlp":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(environ.get(name) for name in endpoints)


def configure() -> bool:
    """Turn tracing on if the environment asks for it; whether it is on."""
    global _tracer
    if not wanted():
        return False
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol.strip().lower() != "http/protobuf":
        logger.warning(
            "tracing off: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; use http/protobuf "
            "(an OTLP/HTTP endpoint, port 4318 on an OpenTelemetry collector)",
            protocol,
        )
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("predictor")
    atexit.register(provider.shutdown)  # what is still pending goes out at exit
    logger.info("tracing: OTLP/HTTP spans to %s", _endpoint())
    return True


def _endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
    )


def _epoch_ns(perf_seconds: float) -> int:
    return int(perf_seconds * 1e9) + _EPOCH_OFFSET_NS


def start_request(name: str, headers: dict[str, str], protocol: str) -> Any:
    """The SERVER span of an inference request arriving now, continuing the caller's trace
    (`headers` with lower-case names); None when tracing is off. Until finish_request the
    request's children attach to it."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(headers)
    span = _tracer.start_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"predictor.protocol": protocol},
    )
    return span, _current.set(span)


def finish_request(
    handle: Any,
    model: str,
    status: int,
    request_id: str,
    error: str | None,
    grpc_code: int | None = None,
) -> None:
    """End the request's span with its outcome (5xx: an error, as OpenTelemetry's HTTP
    conventions have it for servers; 4xx is the client's). A gRPC call gives the code it
    answered with (grpc_service.GRPC_CODES)."""
    if handle is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span, token = handle
    span.set_attribute("predictor.model", model)
    span.set_attribute("predictor.status", status)
    if grpc_code is not None:
        span.set_attribute("rpc.grpc.status_code", grpc_code)
    else:
        span.set_attribute("http.response.status_code", status)
    span.set_attribute("predictor.request_id", request_id)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, error or ""))
    elif error:
        span.set_attribute("predictor.error", error)
    span.end()
    _current.reset(token)


def child(name: str, start: float, end: float, **attributes: Any) -> None:
    """A finished child of the current request's span, from perf_counter seconds."""
    span = _current.get()
    if span is None:
        return
    from opentelemetry.trace import set_span_in_context

    child_span = _tracer.start_span(
        name,
        context=set_span_in_context(span),
        start_time=_epoch_ns(start),
        attributes=attributes or None,
    )
    child_span.end(end_time=_epoch_ns(end))


def forward_spans(timing: Any, rows: int) -> None:
    """The `queue` and `forward` children from a request's ForwardTiming (batching.py)."""
    span = _current.get()
    if span is None:
        return
    span.set_attribute("predictor.rows", rows)
    span.set_attribute("predictor.batch_rows", timing.batch_rows)
    child("queue", timing.queued_ns / 1e9, timing.started_ns / 1e9)
    forward_start, forward_end = timing.started_ns / 1e9, timing.finished_ns / 1e9
    child("forward", forward_start, forward_end, batch_rows=timing.batch_rows)
