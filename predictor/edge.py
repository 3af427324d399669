"""The ASGI edge of the server: what every HTTP request passes through first.

For each request it sets the request id (the caller's `X-Request-Id`, or a new one,
returned in the response), enforces `--max_request_bytes` while the body streams in
(413 before the body is read whole) and `--body_timeout` on each read of it (408), counts
the request in the metrics and writes one JSON log line. A request is handled only once
its body has arrived whole: a client that disconnects before is logged as 499 (nginx's
"client closed request"), and nothing is parsed or run. While the server drains
(SIGTERM), every answer carries `Connection: close`. The predictor's endpoints
(routes.py) are answered here directly, without the framework's middleware or routing;
every other request goes on to KServe's app. The edge is the outermost app the server runs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI
from kserve.errors import InferenceError
from starlette.responses import Response

from . import tracing
from .errors import ClientDisconnected, PayloadTooLarge, RequestTimeout, fault_message
from .logs import access_log, new_request_id
from .metrics import REJECTED, observe_request
from .model import TorchModel
from .routes import HttpRequest, HttpResponse, Routes, document, error_response

logger = logging.getLogger("predictor")
PROBE_PATHS = ("/v2/health", "/metrics", "/v1/models/", "/v2/models/")
CONNECTION_CLOSE = (b"connection", b"close")


class Edge:
    def __init__(
        self,
        app,
        routes: Routes,
        max_request_bytes: int,
        model_name: str,
        body_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_bytes = max_request_bytes
        self.model_name = model_name
        self.body_timeout = body_timeout
        self.too_large = f"request body larger than {max_request_bytes} bytes (--max_request_bytes)"
        self.too_slow = (
            f"request body not received: no data for {body_timeout:g} s (--body_timeout)"
        )

    def around(self, inner):
        """The edge in front of `inner`, the app as the server runs it."""
        self.app = inner
        return self

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id", "")[:128] or new_request_id()
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        method, path = scope["method"], scope["path"]
        route = self.routes.match(method, path, scope.get("query_string", b""))
        if route is None:
            status, error = await self._pass_on(scope, receive, send, headers, id_header)
        else:
            handler, path_params = route
            legacy = path.startswith("/api/")
            span = (
                tracing.start_request(f"{method} {path}", headers, _protocol(path))
                if method == "POST"
                else None
            )
            try:
                body = await self._read_body(receive, headers)
                response = await handler(HttpRequest(path_params, headers, body))
            except ClientDisconnected as gone:
                response = HttpResponse(499, b"", error=str(gone))
            except PayloadTooLarge as too_large:
                REJECTED.labels(self.model_name, "too_large").inc()
                response = error_response(too_large, legacy=legacy)
            except RequestTimeout as too_slow:
                response = error_response(too_slow, legacy=legacy)
            except Exception as fault:  # a fault in the model or the server, not the request
                logger.exception("request %s failed", request_id)
                response = error_response(InferenceError(fault_message(fault)), legacy=legacy)
            if response.status != 499:  # nobody is there to read it
                if self.routes.draining():
                    response.headers["connection"] = "close"
                await _send(send, response, id_header)
            status, error = response.status, response.error
            tracing.finish_request(span, self.model_name, status, request_id, error)
        elapsed = time.perf_counter() - start
        if route is not None and method == "POST":
            observe_request(self.model_name, _protocol(path), status, elapsed)
        probe = (method == "GET" and path.startswith(PROBE_PATHS)) or path in ("/", "/v2")
        access_log.write(request_id, method, path, status, elapsed, error, quiet=probe)

    def _check_declared_length(self, headers: dict[str, str]) -> None:
        """A Content-Length over the limit is refused before anything is read."""
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            raise PayloadTooLarge(self.too_large)

    async def _read_body(self, receive, headers: dict[str, str]) -> bytes:
        self._check_declared_length(headers)
        chunks, size = [], 0
        while True:
            message = await self._receive(receive)
            if message["type"] == "http.disconnect":
                raise ClientDisconnected(
                    f"client disconnected after {size} bytes of the request body"
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(self.too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _receive(self, receive):
        """The next body message, or RequestTimeout when none comes in --body_timeout."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await receive()
        except TimeoutError:
            REJECTED.labels(self.model_name, "body_timeout").inc()
            raise RequestTimeout(self.too_slow) from None

    async def _pass_on(self, scope, receive, send, headers, id_header) -> tuple[int, str | None]:
        """KServe's own routes, with the same id header and body limit."""
        status = 500
        received = 0
        started = False
        body_done = False

        async def counted_receive():
            nonlocal received, body_done
            if body_done:  # the app now waits for the client to go away: no deadline
                return await receive()
            message = await self._receive(receive)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self.too_large)
            body_done = not message.get("more_body", False)
            return message

        async def send_with_id(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                extra = [id_header, CONNECTION_CLOSE] if self.routes.draining() else [id_header]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            self._check_declared_length(headers)
            await self.app(scope, counted_receive, send_with_id)
        except (PayloadTooLarge, RequestTimeout) as refused:
            if started:
                raise
            response = error_response(refused)
            await _send(send, response, id_header)
            return response.status, response.error
        return status, None


def _protocol(path: str) -> str:
    """v1, v2 or legacy: the protocol label of an inference route's path."""
    return "legacy" if path.startswith("/api/") else path[1:3]


async def _send(send, response: HttpResponse, id_header: tuple[bytes, bytes]) -> None:
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    raw_headers.append((b"content-length", str(len(response.body)).encode()))
    raw_headers.append(id_header)
    await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def install(
    app: FastAPI,
    models: dict[str, TorchModel],
    max_request_bytes: int,
    latency_logging: bool,
    body_timeout: float = 30.0,
) -> Edge:
    """The edge for KServe's app; call before ModelServer.start(). The server runs the
    edge as the outermost app (http_server.install(front=edge.around)), so the predictor's
    routes skip the framework's middleware stack; everything else goes on to `app`."""
    edge = Edge(app, Routes(models), max_request_bytes, next(iter(models)), body_timeout)
    document(app)
    # Raised by the edge's receive inside KServe's own routes: answered with their status,
    # not as the InvalidInput (400) they also are.
    app.add_exception_handler(PayloadTooLarge, _refusal)
    app.add_exception_handler(RequestTimeout, _refusal)
    if not latency_logging:
        app.router.on_startup.append(lambda: _drop_timing_middleware(app))
    return edge


async def _refusal(request, error: Exception) -> Response:
    refused = error_response(error)
    return Response(refused.body, status_code=refused.status, headers=refused.headers)


def _drop_timing_middleware(app: FastAPI) -> None:
    """KServe wraps every request in a middleware whose only output is latency log lines
    (a getrusage call and two log calls per request); with latency logging off it does
    nothing useful, so it leaves the stack before the first request."""
    from timing_asgi import TimingMiddleware

    app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
    app.middleware_stack = None  # rebuilt from user_middleware on the next request
