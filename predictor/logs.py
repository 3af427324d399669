"""Request logging: one JSON line per request, with a request id the caller can follow.

The id comes from the caller's `X-Request-Id` (or a new one) and goes back in the
response's `X-Request-Id`. Health probes and /metrics are logged at DEBUG only, so a
pod's log is not a list of kubelet probes.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time

import orjson

from .metrics import LATENCY, REQUESTS, protocol_of

access_logger = logging.getLogger("predictor.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process and cheap: a random prefix and a counter."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class _DropGrpcMethodLines(logging.Filter):
    """KServe's gRPC interceptor logs "grpc method: ..." for every call; the predictor logs
    its own JSON line per request instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("grpc method:")


def configure_request_log(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    access_logger.handlers = [handler]
    access_logger.setLevel(level)
    access_logger.propagate = False
    logging.getLogger("kserve").addFilter(_DropGrpcMethodLines())


def log_request(fields: dict, quiet: bool = False) -> None:
    """One JSON line for one request (DEBUG for probes, so they stay out of the log)."""
    level = logging.DEBUG if quiet else logging.INFO
    if access_logger.isEnabledFor(level):
        access_logger.log(level, "request", extra={"fields": fields})


def _is_probe(method: str, path: str) -> bool:
    if method != "GET":
        return False
    return path.startswith(("/v2/health", "/metrics")) or path in ("/", "/v2")


class RequestLogMiddleware:
    """Pure ASGI middleware, cheap enough for every request on the hot path: the request id,
    one JSON log line, and the request metrics of the REST inference paths."""

    def __init__(self, app, model_name: str = "") -> None:
        self.app = app
        self.model_name = model_name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        if request_id is None:
            request_id = new_request_id()
            scope["headers"] = [*scope["headers"], (b"x-request-id", request_id.encode())]
        start = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            protocol = protocol_of(scope["path"])
            if protocol is not None:
                REQUESTS.labels(self.model_name, protocol, str(status)).inc()
                LATENCY.labels(self.model_name, protocol).observe(elapsed)
            fields = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            }
            error = scope.get("state", {}).get("error")
            if error:
                fields["error"] = error
            log_request(fields, quiet=_is_probe(scope["method"], scope["path"]))
