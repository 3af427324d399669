"""`run --prometheus`: canaries judged on real traffic. A real Prometheus
(tests/prometheus_server.py) scrapes real predictor processes that play the variants of a
Standard-mode InferenceService (the fake API server with KServe's controller simulated), with
the revision labels set through its scrape configuration as the chart's PodMonitor sets them;
a load generator sends real requests through the HTTPRoute's weights, as the gateway would.
Webhooks hit a real HTTP server.

    pvc://models/doubler     stable (revision torch-predictor)
    pvc://models/doubler-v2  a healthy canary, the same process (torch-v2-predictor)
    pvc://models/errors      a model bug (500) on inputs that sum below zero (torch-errors-...)
    pvc://models/slow        right answers, 300 ms each (torch-slow-predictor)
    pvc://models/quiet       a doubler of its own that the test gives too little traffic
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from predictor.rollout import isvc as spec
from tests import toy_models
from tests.fake_kube_api import (
    HTTPROUTES,
    ISVC_COLLECTION,
    FakeKubeAPI,
    KServeStandardSimulator,
    kserve_webhook,
    rollout_cli,
)
from tests.isvc_schema import validate_isvc
from tests.prometheus_server import PrometheusServer, prometheus_binary
from tests.rollout_models import SlowDoubler, save_state_dict
from tests.serving import PredictorProcess
from tests.test_rollout_e2e import inference_service

pytestmark = pytest.mark.slow

COLLECTION = ISVC_COLLECTION.format(namespace="ml")
STABLE, HEALTHY = "pvc://models/doubler", "pvc://models/doubler-v2"
ERRORS, SLOW, QUIET = "pvc://models/errors", "pvc://models/slow", "pvc://models/quiet"
GATED = ["--interval", "3s", "--timeout", "20s", "--min-requests", "5"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(backends, prometheus): the processes, and a Prometheus scraping them as revisions."""
    prometheus_binary()
    models = tmp_path_factory.mktemp("gated-models")
    processes = {
        "stable": PredictorProcess(),
        "errors": PredictorProcess(
            toy_models.save_state_dict(models / "errors", toy_models.FailsOnNegative(), None),
            extra_args=["--model_class", "tests.toy_models:FailsOnNegative"],
        ),
        "slow": PredictorProcess(
            save_state_dict(SlowDoubler(), models / "slow"),
            extra_args=["--model_class", "tests.rollout_models:SlowDoubler"],
        ),
        "quiet": PredictorProcess(),
    }
    with ThreadPoolExecutor(len(processes)) as pool, ExitStack() as stack:
        stack.callback(lambda: list(pool.map(lambda p: p.stop(), processes.values())))
        list(pool.map(lambda p: p.start(), processes.values()))
        revision_of = {  # the revision label of each scrape, as the PodMonitor gives it
            "torch-predictor": "stable",
            "torch-v2-predictor": "stable",
            "torch-errors-predictor": "errors",
            "torch-slow-predictor": "slow",
            "torch-quiet-predictor": "quiet",
        }
        targets = [
            (
                processes[name].http_target,
                {"namespace": "ml", "inferenceservice": "torch", "revision": revision},
            )
            for revision, name in revision_of.items()
        ]
        prometheus = stack.enter_context(PrometheusServer(targets))
        assert prometheus.wait_for(f"count(up == 1) == {len(targets)}")
        url = {name: process.http_url for name, process in processes.items()}
        backends = {
            STABLE: url["stable"],
            HEALTHY: url["stable"],
            ERRORS: url["errors"],
            SLOW: url["slow"],
            QUIET: url["quiet"],
        }
        yield backends, prometheus


@pytest.fixture
def cluster(world, tmp_path):
    """(api, kubeconfig, prometheus): `torch` in Standard mode, real traffic flowing through
    the HTTPRoute's weights for as long as the test runs."""
    backends, prometheus = world
    isvc = inference_service()
    isvc["metadata"]["annotations"][spec.DEPLOYMENT_MODE_ANNOTATION] = "Standard"
    with FakeKubeAPI(validator=lambda o: validate_isvc(o) + kserve_webhook(o)) as api:
        kserve = KServeStandardSimulator(api, backends)
        api.create(COLLECTION, isvc)
        kserve.reconcile(COLLECTION, "torch")
        with gateway_traffic(api, kserve):
            yield api, api.kubeconfig(tmp_path / "kubeconfig", namespace="ml"), prometheus
        assert api.errors == []


@contextmanager
def gateway_traffic(api: FakeKubeAPI, kserve: KServeStandardSimulator, workers: int = 4):
    """Requests to the InferenceService, each sent to a backend picked by the HTTPRoute's
    current weights, as the gateway does; half of them sum below zero. Bounded: stops with
    the test, or after 20,000 requests."""
    stop = threading.Event()
    sent = [0]

    def worker() -> None:
        session = requests.Session()
        while not stop.is_set() and sent[0] < 20_000:
            route = api.get(HTTPROUTES.format(namespace="ml"), "torch-predictor")
            refs = route["spec"]["rules"][0]["backendRefs"]
            [ref] = random.choices(refs, weights=[max(r["weight"], 0) for r in refs])
            backend = kserve.available.get(("ml", ref["name"]))
            if backend is None:
                time.sleep(0.01)
                continue
            values = [-3.0, 1.0] if sent[0] % 2 else [1.0, 2.0]
            sent[0] += 1
            with suppress(requests.RequestException):
                session.post(
                    f"{backend}/v1/models/model:predict", json={"instances": values}, timeout=10
                )
            time.sleep(0.005)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)


def run(kubeconfig, prometheus, *args: str):
    """The CLI's run with metric gates and --output json: (result, its record)."""
    result = rollout_cli(
        kubeconfig, "run", "torch", *args, "--prometheus", prometheus.url, "--output", "json",
        timeout=240,
    )  # fmt: skip
    record = json.loads(result.stdout) if result.stdout.strip() else None
    return result, record


def gate(step: dict, name: str) -> dict:
    return next(g for g in step["gates"]["gates"] if g["name"] == name)


def test_a_healthy_canary_is_promoted_on_its_real_traffic(cluster):
    api, kubeconfig, prometheus = cluster
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", HEALTHY, "--canary-name", "v2",
        "--steps", "20,50,100", *GATED,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert record["outcome"] == "promoted"
    assert [s["verdict"] for s in record["steps"]] == ["passed", "passed", "promoted"]
    first = record["steps"][0]
    assert first["gates"]["canaryRevision"] == "torch-v2-predictor"
    assert first["gates"]["previousRevision"] == "torch-predictor"
    assert gate(first, "requests")["canary"] >= 5
    assert gate(first, "error rate")["passed"] and gate(first, "p99 ms")["passed"]
    # Every decision explained on the way, measurements of both revisions included.
    assert "requests: canary" in result.stderr and "/ prev" in result.stderr
    assert "error rate: canary 0 / prev 0" in result.stderr
    assert "synthetic" not in first  # the gates alone, unless --synthetic
    obj = api.get(COLLECTION, "torch")
    assert obj["spec"]["predictor"]["name"] == "v2"


@pytest.mark.parametrize(
    "storage_uri, name, extra, gate_name, reason",
    [
        (ERRORS, "errors", [], "error rate", "5xx rate"),
        (SLOW, "slow", [], "p99 ms", "p99 latency"),
        (QUIET, "quiet", ["--min-requests", "100000"], "requests", "too few requests to judge"),
    ],
    ids=["more-errors", "slower", "too-little-traffic"],
)
def test_a_worse_or_unjudgeable_canary_is_rolled_back_for_its_reason(
    cluster, storage_uri, name, extra, gate_name, reason
):
    api, kubeconfig, prometheus = cluster
    before = api.get(COLLECTION, "torch")["spec"]
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", storage_uri, "--canary-name", name,
        "--steps", "20,100", *GATED, *extra,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert record["outcome"] == "rolled back"
    assert reason in record["reason"] and gate_name in record["reason"]
    [step] = record["steps"]
    assert step["verdict"] == "failed"
    failed = gate(step, gate_name)
    assert not failed["passed"] and reason in failed["reason"]
    assert f"FAIL: {reason}" in result.stderr
    assert api.get(COLLECTION, "torch")["spec"] == before


def test_custom_gates_substitute_the_revision_and_judge_its_value(cluster, tmp_path):
    api, kubeconfig, prometheus = cluster
    gates_file = tmp_path / "gates.yaml"
    gates_file.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "answers",
                    "query": 'sum(increase(predictor_requests_total{namespace="{{namespace}}",'
                    'revision="{{revision}}",status="200"}[{{interval}}]))',
                    "min": 1,
                },
                {
                    "name": "healthy",
                    "query": 'min(predictor_model_healthy{revision="{{revision}}"})',
                    "min": 1,
                    "max": 1,
                },
                {
                    "name": "impossible",
                    "query": 'sum(predictor_inflight_requests{revision="{{revision}}"})',
                    "min": 1000,
                },
            ]
        )
    )
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", HEALTHY, "--canary-name", "v2",
        "--steps", "20", *GATED, "--gates-file", str(gates_file),
    )  # fmt: skip
    assert result.returncode == 1
    [step] = record["steps"]
    assert gate(step, "custom:answers")["passed"]
    assert gate(step, "custom:healthy")["canary"] == 1
    impossible = gate(step, "custom:impossible")
    assert not impossible["passed"] and "is not >= 1000" in impossible["reason"]
    assert record["reason"].startswith("custom:impossible:")


class Hooks:
    """A real HTTP server taking the webhooks: answers `status[phase]` (default 200), keeps
    every payload."""

    def __init__(self, status: dict[str, int]):
        self.status = status
        self.calls: list[dict] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hooks.calls.append(body)
                self.send_response(hooks.status.get(body["phase"], 200))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def args(self, *phases: str) -> list[str]:
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return [arg for phase in phases for arg in ("--webhook", f"{phase}={url}/{phase}")]


ALL_PHASES = ("pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback")


def test_webhooks_are_called_at_each_point_with_the_rollouts_state(cluster):
    api, kubeconfig, prometheus = cluster
    hooks = Hooks({})
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", HEALTHY, "--canary-name", "v2",
        "--steps", "20,100", *GATED, *hooks.args(*ALL_PHASES),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c["phase"] for c in hooks.calls] == [
        "pre-rollout",
        "rollout",
        "confirm-promotion",
        "post-rollout",
    ]
    rollout = hooks.calls[1]
    assert rollout["name"] == "torch" and rollout["namespace"] == "ml"
    assert rollout["percent"] == 20 and rollout["canaryName"] == "v2"
    assert rollout["model"]["storageUri"] == HEALTHY
    assert [w["phase"] for w in record["webhooks"]] == [c["phase"] for c in hooks.calls]


def test_a_refusing_pre_rollout_webhook_starts_nothing(cluster):
    api, kubeconfig, prometheus = cluster
    before = api.get(COLLECTION, "torch")
    hooks = Hooks({"pre-rollout": 403})
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", HEALTHY, "--steps", "20", *GATED,
        *hooks.args("pre-rollout"),
    )  # fmt: skip
    assert result.returncode == 1
    assert record["outcome"] == "halted"
    assert (
        api.get(COLLECTION, "torch")["metadata"]["generation"] == before["metadata"]["generation"]
    )


def test_an_unconfirmed_promotion_is_rolled_back_and_says_so(cluster):
    api, kubeconfig, prometheus = cluster
    hooks = Hooks({"confirm-promotion": 409})
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", HEALTHY, "--canary-name", "v2",
        "--steps", "20,100", *GATED, *hooks.args("confirm-promotion", "rollback"),
    )  # fmt: skip
    assert result.returncode == 1
    assert record["outcome"] == "rolled back"
    assert "confirm-promotion webhook refused" in record["reason"]
    assert [c["phase"] for c in hooks.calls] == ["confirm-promotion", "rollback"]
    assert "canary" not in api.get(COLLECTION, "torch")["spec"]


def test_a_dark_launch_is_judged_on_its_test_traffic_alone(cluster):
    """Step 0: the canary gets no weighted traffic, only what a test audience sends it (here
    the synthetic requests through its own Service, as a header route or the tag URL would
    carry them), and the gates judge that."""
    api, kubeconfig, prometheus = cluster
    result, record = run(
        kubeconfig, prometheus, "--storage-uri", QUIET, "--canary-name", "quiet",
        "--steps", "0", *GATED, "--synthetic", "--rounds", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert record["outcome"] == "left at 0%"
    [step] = record["steps"]
    assert step["synthetic"]["passed"]
    assert gate(step, "requests")["canary"] >= 5  # its test traffic, no share of the route's
    weights = api.get(HTTPROUTES.format(namespace="ml"), "torch-predictor")["spec"]["rules"][0]
    assert {r["name"]: r["weight"] for r in weights["backendRefs"]}["torch-quiet-predictor"] == 0
