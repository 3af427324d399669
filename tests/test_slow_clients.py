"""Stalled and surplus clients are cut off, and everyone else is still served.

Real server processes, hundreds of raw-socket clients: slow headers (a line at a time),
stalled bodies, and more connections than --max_connections.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

HEAD = b"POST /v1/models/model:predict HTTP/1.1\r\nHost: test\r\n"


def read_until_closed(sock: socket.socket, limit_s: float = 10.0) -> bytes:
    sock.settimeout(limit_s)
    data = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_slow_headers_and_stalled_bodies_get_408_while_others_are_served():
    args = ["--header_timeout", "2", "--body_timeout", "2", "--max_connections", "1000"]
    with PredictorProcess(extra_args=args) as server:
        address = ("127.0.0.1", server.http_port)
        slow_headers = [socket.create_connection(address) for _ in range(300)]
        stalled_bodies = [socket.create_connection(address) for _ in range(100)]
        stalled_kserve = [socket.create_connection(address) for _ in range(5)]
        silent = [socket.create_connection(address) for _ in range(50)]
        try:
            for sock in slow_headers:
                sock.sendall(HEAD)
            for sock in stalled_bodies:
                sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"instances"')
            for sock in stalled_kserve:  # a route of KServe's own, past the edge
                sock.sendall(
                    b"POST /v1/models/model:explain HTTP/1.1\r\nHost: test\r\n"
                    b'Content-Length: 100\r\n\r\n{"instances"'
                )
            # While all of them hang on, a normal request is answered.
            for _ in range(3):
                for sock in slow_headers:
                    sock.sendall(b"X-Slow: 1\r\n")
                answer = requests.post(
                    f"{server.http_url}/v1/models/model:predict",
                    json={"instances": [1.0]},
                    timeout=5,
                )
                assert answer.json() == {"predictions": [2.0]}
                time.sleep(0.3)
            for sock in slow_headers[:20] + silent[:10]:
                answer = read_until_closed(sock)
                assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:80]
                assert b"--header_timeout" in answer
            for sock in stalled_bodies[:20] + stalled_kserve:
                answer = read_until_closed(sock)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert b"--body_timeout" in answer and b"connection: close" in answer.lower()
        finally:
            for sock in slow_headers + stalled_bodies + stalled_kserve + silent:
                sock.close()
        assert server.probes()["/v2/health/ready"] == 200
        metrics = requests.get(f"{server.http_url}/metrics", timeout=5).text
        assert 'predictor_rejected_requests_total{model="model",reason="header_timeout"}' in metrics
        assert 'predictor_rejected_requests_total{model="model",reason="body_timeout"}' in metrics


def test_blank_lines_between_requests_do_not_keep_a_connection_open():
    server = PredictorProcess(extra_args=["--header_timeout", "1"])
    with server, socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        first = b""
        while not first.endswith(b'{"live":true}'):
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        sock.sendall(b"\r\n")  # starts no request, yet stops the keep-alive timer
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]


def test_a_slow_answer_is_not_cut_off_by_the_next_requests_header_deadline(tmp_path):
    """A pipelined request's headers wait behind a slow answer without a 408."""
    from tests import toy_models

    toy_models.save_state_dict(tmp_path, toy_models.Slow(), None)
    args = ["--model_class", "tests.toy_models:Slow", "--header_timeout", "0.5"]
    server = PredictorProcess(tmp_path, extra_args=args)
    with server, socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        body = b'{"instances": [1.0]}'
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body + b"GET /v2/health")
        answer = b""
        sock.settimeout(10)
        while b"predictions" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:80]


def test_connections_past_the_cap_get_503_and_are_closed():
    with PredictorProcess(extra_args=["--max_connections", "20"]) as server:
        address = ("127.0.0.1", server.http_port)
        idle = [socket.create_connection(address) for _ in range(20)]
        try:
            time.sleep(0.2)  # the server has taken them all
            refused = requests.get(f"{server.http_url}/v2/health/ready", timeout=5)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "--max_connections" in refused.json()["error"]
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert requests.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code == 200
