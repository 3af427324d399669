"""A real Prometheus server for the tests (Debian's `prometheus` package, which `make test`
installs): it scrapes the given targets every second, with the labels the chart's PodMonitor
would give them, and answers PromQL over its HTTP API, as the dashboard and the alerts need."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.serving import free_port


def prometheus_binary() -> str:
    """The prometheus binary, or skip (CI installs it: `make test` runs the Makefile's
    prometheus target, as it does for shellcheck)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary (apt-get install prometheus; `make test` does)")
    return binary


class PrometheusServer:
    def __init__(self, targets: list[tuple[str, dict[str, str]]], rule_files: list[Path] = ()):
        """targets: (host:port, labels) pairs, each scraped at /metrics every second."""
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": "predictor",
                    "static_configs": [
                        {"targets": [target], "labels": labels} for target, labels in targets
                    ],
                }
            ],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "log", "w"),  # noqa: SIM115 - lives as long as the process
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self._dir / "log").read_text()
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {(self._dir / 'log').read_text()}")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector; AssertionError with Prometheus' message if the
        expression does not parse or evaluate."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def query_range(self, expr: str, seconds: float, step: float = 1.0) -> list[dict]:
        end = time.time()
        params = {"query": expr, "start": end - seconds, "end": end, "step": step}
        body = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=10).json()
        assert body.get("status") == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict]:
        """The result of `expr` once it is not empty."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)
