"""SIGTERM under load: every request is answered or refused at connect, none is reset.

A real server process, and clients on raw sockets so that each failure is told apart
exactly: refused at connect (the port is closed: fine, the client retries elsewhere)
versus reset or cut off after the request was sent (a lost request).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

REQUEST = (
    b"POST /v1/models/model:predict HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/json\r\nContent-Length: 22\r\n\r\n"
    b'{"instances": [1, 2]}\n'
)
LOAD_LIMIT_S = 20.0  # no client loop runs longer than this, whatever happens


@dataclass
class Tally:
    answered: int = 0
    answered_after_sigterm: int = 0
    refused: int = 0
    lost: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def read_response(sock: socket.socket) -> tuple[bytes, bool]:
    """One whole HTTP response (status line and headers, and the body by Content-Length);
    raises ConnectionError if the connection ends before it is whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes of the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = head.lower()
    length = int(headers.split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        body += chunk
    return head.split(b"\r\n")[0], b"connection: close" in headers


def client(port: int, keep_alive: bool, tally: Tally, stop: threading.Event, signalled) -> None:
    deadline = time.monotonic() + LOAD_LIMIT_S
    sock = None
    while not stop.is_set() and time.monotonic() < deadline:
        if sock is None:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except (ConnectionRefusedError, TimeoutError):
                with tally.lock:
                    tally.refused += 1
                time.sleep(0.02)
                continue
        try:
            sock.sendall(REQUEST)
            status, closing = read_response(sock)
            assert status == b"HTTP/1.1 200 OK", status
        except (OSError, ConnectionError) as error:
            with tally.lock:
                tally.lost.append(f"{type(error).__name__}: {error}")
            sock.close()
            sock = None
            continue
        with tally.lock:
            tally.answered += 1
            tally.answered_after_sigterm += signalled.is_set()
        if closing or not keep_alive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


@pytest.mark.parametrize("run", range(3))
def test_sigterm_under_load_resets_nothing(run):
    server = PredictorProcess(extra_args=["--drain_seconds", "1.5", "--grace_period", "10"])
    server.start()
    tally, stop, signalled = Tally(), threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=client, args=(server.http_port, i % 2 == 0, tally, stop, signalled))
        for i in range(6)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        signalled.set()
        ready = requests.get(f"{server.http_url}/v2/health/ready", timeout=5)
        assert ready.status_code == 503  # at once, while requests are still answered
        assert server.process.wait(timeout=30) == 0
        time.sleep(1.5)  # clients now meet a closed port
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=LOAD_LIMIT_S + 10)
        server.stop()
    assert tally.lost == [], tally.lost[:5]
    assert tally.answered_after_sigterm > 0
    assert tally.refused > 0
    logs = server.logs()
    assert "draining for 1.5 s" in logs
