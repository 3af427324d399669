"""Start the predictor as a real server process on 127.0.0.1 and wait until it is ready.

Tests, the rollout tests and the benchmarks share this so that every real-process test
starts the server the same way a user does: `python -m predictor ...`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PredictorProcess:
    """`python -m predictor` in a child process, with random free ports.

    Use as a context manager: on enter it polls `/v2/health/ready` until the model is
    ready (or the process dies, or `ready_timeout` passes); on exit it sends SIGTERM
    and waits for the process to end.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        model_name: str = "model",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 90.0,
    ) -> None:
        self.model_name = model_name
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "predictor",
            "--model_name",
            model_name,
            "--http_port",
            str(self.http_port),
            "--grpc_port",
            str(self.grpc_port),
        ]
        if model_dir is not None:
            self.args += ["--model_dir", str(model_dir)]
        self.args += list(extra_args or [])
        if "--drain_seconds" not in self.args:
            # Nothing routes to a test server: stop at once on SIGTERM (the drain has its tests).
            self.args += ["--drain_seconds", "0"]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_target(self) -> str:
        """host:port, the form tritonclient's HTTP client takes."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def start(self) -> PredictorProcess:
        self.process = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"predictor exited with {self.process.returncode} before it was ready:\n"
                    + self.logs()
                )
            try:
                if requests.get(f"{self.http_url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"predictor not ready after {self.ready_timeout}s:\n{self.logs()}")

    def wait_for_inflight(self, count: int, timeout: float = 20.0) -> None:
        """Until the server reports `count` inference requests in flight (its metrics), so a
        test knows they were accepted and are being worked on."""
        line = f'predictor_inflight_requests{{model="{self.model_name}"}} {float(count)}'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in requests.get(f"{self.http_url}/metrics", timeout=5).text:
                return
            time.sleep(0.05)
        raise TimeoutError(f"never saw {count} requests in flight:\n{self.logs()}")

    def metric(self, series: str) -> float | None:
        """The value of one series in /metrics (its full name with labels), or None."""
        for line in requests.get(f"{self.http_url}/metrics", timeout=5).text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def probes(self) -> dict[str, int]:
        """The status of every readiness and liveness endpoint."""
        name = self.model_name
        paths = [
            "/v2/health/ready",
            "/v2/health/live",
            f"/v2/models/{name}/ready",
            f"/v1/models/{name}",
        ]
        return {path: requests.get(self.http_url + path, timeout=5).status_code for path in paths}

    def triton_grpc(self, request: dict) -> dict:
        """Call this server with tritonclient's gRPC client, which must run in a process of
        its own (tests/triton_grpc_client.py says why): what it got, as JSON."""
        result = subprocess.run(
            [
                sys.executable,
                "tests/triton_grpc_client.py",
                self.grpc_target,
                self.model_name,
                json.dumps(request),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(result.stdout)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The server's log once it contains `text` (a line may be written just after the
        answer reaches the client)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = self.logs()
            if text in logs:
                return logs
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} never appeared in the log:\n{self.logs()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def __enter__(self) -> PredictorProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._log.close()
