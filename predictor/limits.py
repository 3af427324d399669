"""A request-size limit enforced while the body streams in, before it is read whole.

A Content-Length over the limit is refused at once; a chunked body is counted as it
arrives and refused as soon as it passes the limit. Either way the answer is 413 in
the endpoint's own error format.
"""

from __future__ import annotations

import orjson

from .metrics import REJECTED


class _TooLarge(Exception):
    pass


def _error_body(path: str, message: str) -> bytes:
    if path.rstrip("/") == "/api/predict":
        return orjson.dumps({"error": True, "message": message})
    return orjson.dumps({"error": message})


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int, model_name: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.model_name = model_name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.max_bytes} bytes (--max_request_bytes)"
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(scope, send, message)
                    return
                break
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return event

        async def tracking_send(event) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send, message)

    async def _refuse(self, scope, send, message: str) -> None:
        REJECTED.labels(self.model_name, "too_large").inc()
        scope.setdefault("state", {})["error"] = message
        body = _error_body(scope["path"], message)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
