"""Prometheus metrics, served on KServe's /metrics beside KServe's own histograms.

Requests are counted by model, protocol (v1, v2, legacy, grpc) and status code, so a
dashboard can tell client errors from server errors and overload rejections. Where a
request's time goes: decode and encode by model and protocol; the wait before the forward,
a batch's wait for company and the forward itself by model (a batch mixes protocols).
KServe's own request_preprocess/predict/postprocess_seconds are filled too (model.py).
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

from . import statistics

REQUESTS = Counter(
    "predictor_requests_total",
    "Inference requests answered, by model, protocol and status code.",
    ["model", "protocol", "status"],
)
LATENCY = Histogram(
    "predictor_request_duration_seconds",
    "Time from a request's arrival to its answer, by model and protocol.",
    ["model", "protocol"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "predictor_inflight_requests", "Inference requests being worked on now.", ["model"]
)
REJECTED = Counter(
    "predictor_rejected_requests_total",
    "Requests refused before inference, by reason (overload, too_large).",
    ["model", "reason"],
)
BATCH_SIZE = Histogram(
    "predictor_batch_size",
    "Rows per forward call when adaptive batching is on.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
# From 10 µs (a small request's decode) to seconds (a large model's forward).
STAGE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip
DECODE = Histogram(
    "predictor_decode_seconds",
    "Decoding a request's body into arrays, by model and protocol.",
    ["model", "protocol"],
    buckets=STAGE_BUCKETS,
)
ENCODE = Histogram(
    "predictor_encode_seconds",
    "Encoding the outputs into the answer, by model and protocol.",
    ["model", "protocol"],
    buckets=STAGE_BUCKETS,
)
QUEUE = Histogram(
    "predictor_queue_seconds",
    "A request's wait before its forward started (batching's queue and delay, or an "
    "inference thread's queue; 0 when run at once), by model.",
    ["model"],
    buckets=STAGE_BUCKETS,
)
BATCH_DELAY = Histogram(
    "predictor_batch_delay_seconds",
    "How long each batch waited for company, from its first request to its forward, by model.",
    ["model"],
    buckets=STAGE_BUCKETS,
)
FORWARD = Histogram(
    "predictor_forward_seconds",
    "The module call of each forward (one per batch), by model.",
    ["model"],
    buckets=STAGE_BUCKETS,
)
MODEL_HEALTHY = Gauge(
    "predictor_model_healthy",
    "1 while the model can answer; 0 once it is broken (a fatal device error: liveness fails).",
    ["model"],
)


@functools.cache
def _request_series(model: str, protocol: str, status: int):
    """Label lookups cost more than the increment; each series is looked up once."""
    return REQUESTS.labels(model, protocol, str(status)), LATENCY.labels(model, protocol)


@functools.cache
def _stage_series(stage: str, model: str, protocol: str):
    return (DECODE if stage == "decode" else ENCODE).labels(model, protocol)


def observe_stage(stage: str, model: str, protocol: str, seconds: float) -> None:
    """A request's decode or encode took `seconds`."""
    _stage_series(stage, model, protocol).observe(seconds)


def prepare(model: str) -> None:
    """Create the request series a model's answers most often land in, at zero: rates and
    increases need a sample from before a series' first request, or its first requests (a
    canary's first 5xx, a dark launch's test burst) vanish from them."""
    for protocol in ("v1", "v2", "grpc", "legacy"):
        for status in (200, 400, 500, 503):
            _request_series(model, protocol, status)


def observe_request(model: str, protocol: str, status: int, seconds: float) -> None:
    """An inference request was answered: its metrics, and the statistics extension's
    success/fail counts (statistics.py)."""
    counter, histogram = _request_series(model, protocol, status)
    counter.inc()
    histogram.observe(seconds)
    statistics.answered(model, status < 400, seconds)
