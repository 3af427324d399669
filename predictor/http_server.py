"""The HTTP server under the edge: KServe's uvicorn server, guarded and drained.

Guarded (`GuardedProtocol`, uvicorn's httptools protocol plus three limits):
- `--header_timeout`: a request's headers must arrive whole within this many seconds of
  its first byte (or of the connection opening); else 408 and the connection is closed.
  Slow-header clients cannot hold connections open for as long as they like.
- `--max_connections`: past this many open connections, a new one is answered 503 with
  `Retry-After` and closed, so a flood of idle connections cannot exhaust the process.
- idle keep-alive connections close after KServe's `--timeout_keep_alive`, as before.
(Body reads are timed by the edge, which can still answer 408 in the endpoint's format.)

Drained (`DrainingServer`), on SIGTERM:
1. readiness fails at once (health.py), and for `--drain_seconds` the server goes on
   accepting and answering, each response with `Connection: close` so keep-alive clients
   reconnect (to other replicas, once the endpoints have caught up);
2. then it stops accepting without resetting anything the kernel already accepted: the
   listening socket first drops new connection attempts (a socket filter; the client's
   retried SYN then meets a closed port: refused at connect), the event loop accepts
   what is queued, and only then is the socket closed;
3. requests in flight finish within `--grace_period`; a connection that has not sent its
   request yet gets a moment to send it; the process exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from kserve.protocol.rest import server as kserve_rest_server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .logs import access_log, new_request_id
from .metrics import REJECTED

logger = logging.getLogger("predictor")

# A connection accepted during shutdown, or idle, that has sent nothing for this long is
# closed; one that sends a request within it is answered.
LINGER_S = 0.5
# Time for the event loop to accept what the kernel queued before the socket filter.
ACCEPT_SWEEP_S = 0.05
SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap."""

    header_timeout: float = 10.0
    max_connections: int = 2048
    model_name: str = ""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.last_activity = self.loop.time()
        self._refused = False
        self._closing = False
        self._awaiting_headers = False  # bytes of a request have come, its headers not all
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            REJECTED.labels(self.model_name, "connections").inc()
            self._refuse(
                503,
                f"the server has {self.max_connections} connections open "
                "(--max_connections); retry shortly",
                retry_after=True,
            )
            return
        self._arm_header_timer()  # a connection that never sends a request is cut off too

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is written; what the client still sends is discarded
        self.last_activity = self.loop.time()
        super().data_received(data)
        if self._header_timer is None and not self._refused and not self.transport.is_closing():
            # Part of a request's headers; or bytes that start none (blank lines), which
            # stopped uvicorn's keep-alive timer: either way a deadline.
            idle = self.cycle is None or self.cycle.response_complete
            if self._awaiting_headers or (idle and self.timeout_keep_alive_task is None):
                self._arm_header_timer()

    def on_message_begin(self) -> None:
        self._awaiting_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()
        if self._closing and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_response_complete(self) -> None:
        self.last_activity = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping: a request in progress finishes and closes the
        connection; an idle one closes once quiet for LINGER_S (a request may be on its
        way: just accepted, or a keep-alive client sending now); one whose headers are
        coming is left to finish them or to the header deadline."""
        self._closing = True
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        quiet = self.loop.time() - self.last_activity
        if quiet >= LINGER_S and not self._awaiting_headers:
            self.transport.close()
        else:
            self.loop.call_later(max(0.05, LINGER_S - quiet), self.shutdown)

    # ---- limits ----------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            if self._awaiting_headers:  # a pipelined request waits behind one in progress
                self._arm_header_timer()
            return
        if not self._awaiting_headers and self.timeout_keep_alive_task is not None:
            return  # idle between requests: uvicorn's keep-alive timeout applies
        REJECTED.labels(self.model_name, "header_timeout").inc()
        self._refuse(
            408,
            f"request headers not received within {self.header_timeout:g} s (--header_timeout)",
        )

    def _refuse(self, status: int, message: str, retry_after: bool = False) -> None:
        """Answer without reading the request, then close: FIN after the answer, and the
        socket closed once the client has had LINGER_S to read it (closing at once, with
        its request unread, would send the client a reset instead)."""
        self._refused = True
        self._cancel_header_timer()
        body = b'{"error":"' + message.encode() + b'"}'
        reason = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        access_log.write(new_request_id(), "-", "-", status, 0.0, message)


class DrainingServer(kserve_rest_server._RefreshingServer):
    """KServe's uvicorn server with the guarded protocol and the drain described above."""

    protocol: type[GuardedProtocol] = GuardedProtocol
    drain_seconds: float = 5.0
    on_drain: tuple = ()
    # Wraps the app as uvicorn runs it (after its proxy-headers middleware): the edge.
    front: Callable[[Any], Any] | None = None

    def __init__(self, config) -> None:
        config.http = self.protocol
        super().__init__(config)
        self._drain_deadline: float | None = None

    async def serve(self, sockets=None) -> None:
        if not self.config.loaded:
            self.config.load()
            if self.front is not None:
                self.config.loaded_app = self.front(self.config.loaded_app)
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self._drain_deadline is None and not self.should_exit:  # type: ignore[has-type]
            self._captured_signals.append(sig)
            self._drain_deadline = time.monotonic() + self.drain_seconds
            for callback in self.on_drain:
                callback()
            logger.info(
                "%s: readiness fails; draining for %g s (--drain_seconds), then stopping",
                signal.Signals(sig).name,
                self.drain_seconds,
            )
            if self.drain_seconds <= 0:
                self.should_exit = True
            return
        # A second signal ends the drain at once (SIGINT: no waiting at all). It is not
        # captured again: KServe's own stop runs once, after the HTTP server has stopped.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            for listener in server.sockets or ():
                refuse_new_connections(listener)
        await asyncio.sleep(ACCEPT_SWEEP_S)
        await super().shutdown(sockets)


# Classic BPF, run by the kernel on each TCP segment reaching the listening socket (the
# data starts at the TCP header): keep segments with ACK set, drop the rest (new SYNs).
DROP_NEW_CONNECTIONS = [
    (0x30, 0, 0, 13),  # ldb [13]: the TCP flags byte
    (0x45, 0, 1, 0x10),  # jset #ACK: keep, else drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret: keep the whole segment
    (0x06, 0, 0, 0),  # ret 0: drop
]


def refuse_new_connections(listener) -> None:
    """Attach a socket filter to the listening socket that drops new connection attempts
    (SYNs without ACK): they go unanswered until the socket closes, and the client's retry
    is then refused at connect. Handshakes already under way complete (their ACK passes)
    and connections already queued stay intact, to be accepted."""
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in DROP_NEW_CONNECTIONS)
    program = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(DROP_NEW_CONNECTIONS), ctypes.addressof(program))
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as error:  # not Linux: the socket closes as uvicorn closes it
        logger.debug("cannot filter the listening socket: %s", error)


def install(
    drain_seconds: float,
    header_timeout: float,
    max_connections: int,
    model_name: str,
    on_drain: tuple,
    front: Callable[[Any], Any] | None = None,
) -> None:
    """Have ModelServer's REST server be the guarded, draining one (call before it
    starts): KServe's RESTServer builds its server from this module-level name."""

    class Protocol(GuardedProtocol):
        pass

    Protocol.header_timeout = header_timeout
    Protocol.max_connections = max_connections
    Protocol.model_name = model_name

    class Server(DrainingServer):
        pass

    Server.protocol = Protocol
    Server.drain_seconds = drain_seconds
    Server.on_drain = on_drain
    Server.front = staticmethod(front) if front else None  # type: ignore[assignment]
    kserve_rest_server._RefreshingServer = Server  # type: ignore[misc]
