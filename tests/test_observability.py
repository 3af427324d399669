"""The chart's dashboard and alerts against a real Prometheus (tests/prometheus_server.py)
scraping real predictor processes that play four revisions of one InferenceService, with
real traffic: every PromQL expression of the dashboard and of the alerts must parse and
return data, the alerts must name the right revisions, Prometheus must load the rendered
rules and `promtool check rules` must pass on them.

    stable   the doubler, adaptive batching on, V1 traffic plus a few client errors
    canary   FailsOnNegative: a model bug (500) for negative inputs, half its traffic
    broken   BreaksAfterWarmUp: runs out of memory twice and is broken (healthy 0)
    idle     ready, never called
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
import yaml

from scripts.dashboard_png import render as render_png
from tests import toy_models
from tests.chart_helpers import NAMESPACE, objects, render
from tests.prometheus_server import PrometheusServer, prometheus_binary
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

ISVC = "demo-torch-predictor"  # the chart's fullname for release `demo`
RATE = "1m"  # what Grafana's $__rate_interval stands for here
MONITORING = {
    "monitoring": {
        "podMonitor": {"enabled": True},
        "dashboard": {"enabled": True},
        "alerts": {
            "enabled": True,
            # Thresholds this traffic crosses, so that every alert has something to say.
            "errorRatio": 0.01,
            "p99LatencySeconds": 0.000001,
            "window": "1m",
            "for": "0s",
            "noTrafficWindow": "1m",
        },
    }
}


def chart_objects() -> dict[str, dict]:
    return {d["kind"]: d for d in objects(render(MONITORING))}


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """(prometheus, dashboard, rules file): four revisions scraped, traffic sent."""
    prometheus_binary()  # skip early without one
    models = tmp_path_factory.mktemp("observability-models")
    processes = {
        "stable": PredictorProcess(extra_args=["--max_batch_size", "4"]),
        "canary": PredictorProcess(
            toy_models.save_state_dict(models / "failing", toy_models.FailsOnNegative(), None),
            extra_args=["--model_class", "tests.toy_models:FailsOnNegative"],
        ),
        "broken": PredictorProcess(
            toy_models.save_state_dict(models / "broken", toy_models.BreaksAfterWarmUp(), None),
            extra_args=["--model_class", "tests.toy_models:BreaksAfterWarmUp"],
        ),
        "idle": PredictorProcess(),
    }
    rendered = chart_objects()
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered["PrometheusRule"]["spec"]))
    dashboard = json.loads(next(iter(rendered["ConfigMap"]["data"].values())))
    with ThreadPoolExecutor(len(processes)) as pool, ExitStack() as stack:
        stack.callback(lambda: list(pool.map(lambda p: p.stop(), processes.values())))
        list(pool.map(lambda p: p.start(), processes.values()))
        targets = [
            (
                process.http_target,
                {
                    "namespace": NAMESPACE,
                    "inferenceservice": ISVC,
                    "revision": f"{ISVC}-{name}",
                    "pod": f"{ISVC}-{name}-0",
                },
            )
            for name, process in processes.items()
        ]
        prometheus = stack.enter_context(PrometheusServer(targets, rule_files=[rules]))
        # Every target scraped once before the traffic, so that rates see it arrive.
        assert prometheus.wait_for("count(up == 1) == 4"), "prometheus never scraped them all"
        send_traffic(processes)
        # Two scrapes after the traffic, so that every rate has its two samples.
        prometheus.wait_for(f'predictor_model_healthy{{revision="{ISVC}-broken"}} == 0')
        prometheus.wait_for(
            f'sum(rate(predictor_requests_total{{revision="{ISVC}-canary"}}[{RATE}])) > 0'
        )
        yield prometheus, dashboard, rules


def send_traffic(processes: dict[str, PredictorProcess]) -> None:
    v1 = "/v1/models/model:predict"

    def post(base: str, values: list[float]) -> int:
        return requests.post(base + v1, json={"instances": values}, timeout=30).status_code

    stable, canary = processes["stable"].http_url, processes["canary"].http_url
    for _ in range(2):  # two rounds, scrapes apart
        with ThreadPoolExecutor(4) as pool:  # concurrent, so batching forms batches
            assert set(pool.map(lambda i: post(stable, [1.0, float(i)]), range(20))) == {200}
        for _ in range(2):  # client errors: a status other than 2xx that is no server error
            bad = requests.post(stable + v1, json={"instances": "x"}, timeout=10)
            assert bad.status_code == 400
        statuses = [post(canary, [1.0]) for _ in range(5)] + [
            post(canary, [-5.0]) for _ in range(5)
        ]
        assert sorted(set(statuses)) == [200, 500]
        time.sleep(1.5)
    broken = processes["broken"].http_url
    for _ in range(2):  # a scrape apart: the new 500 series, then its increase
        assert post(broken, [1.0]) == 500
        time.sleep(1.5)


def test_every_dashboard_query_returns_data(observed):
    prometheus, dashboard, _ = observed
    assert len(dashboard["panels"]) == 8
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE)
            result = prometheus.query(expr)
            assert result, f"{panel['title']}: {expr} returned nothing"
            # Per revision, so a canary shows beside its stable predictor.
            assert all("revision" in series["metric"] for series in result), expr


def test_the_dashboard_shows_each_revision_as_it_is(observed):
    prometheus, dashboard, _ = observed
    by_title = {p["title"]: p for p in dashboard["panels"]}

    def values(title: str, index: int = 0) -> dict[str, float]:
        expr = by_title[title]["targets"][index]["expr"].replace("$__rate_interval", RATE)
        return {
            s["metric"]["revision"].removeprefix(f"{ISVC}-"): float(s["value"][1])
            for s in prometheus.query(expr)
        }

    assert values("Model healthy (1) or broken (0)") == {
        "stable": 1,
        "canary": 1,
        "broken": 0,
        "idle": 1,
    }
    ratios = values("Server error ratio (5xx)")
    assert ratios["stable"] == 0 and 0 < ratios["canary"] < 1 and ratios["broken"] == 1
    assert values("Batch size (rows per forward)")["stable"] >= 1
    rates = values("Requests per second")
    assert rates["idle"] == 0 and all(rates[r] > 0 for r in ("stable", "canary", "broken"))


def test_every_alert_fires_for_the_revision_it_is_about(observed):
    prometheus, _, rules = observed
    [group] = yaml.safe_load(rules.read_text())["groups"]
    firing: dict[str, set[str]] = {}
    for rule in group["rules"]:
        result = prometheus.query(rule["expr"])
        assert result, f"{rule['alert']}: {rule['expr']} returned nothing"
        firing[rule["alert"]] = {s["metric"]["revision"].removeprefix(f"{ISVC}-") for s in result}
        assert rule["annotations"]["runbook"], rule["alert"]
    assert firing["TorchPredictorHighErrorRatio"] == {"canary", "broken"}
    assert firing["TorchPredictorModelUnhealthy"] == {"broken"}
    assert firing["TorchPredictorNoTraffic"] == {"idle"}
    assert "stable" in firing["TorchPredictorHighP99Latency"]
    # Prometheus itself loaded the rendered rules and evaluates them.
    loaded = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert [r["name"] for r in loaded[0]["rules"]] == [r["alert"] for r in group["rules"]]
    assert all(r["health"] != "err" for r in loaded[0]["rules"])


def test_promtool_accepts_the_rendered_rules(observed):
    _, _, rules = observed
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (it comes with Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_the_dashboard_draws_from_prometheus(observed, tmp_path):
    """scripts/dashboard_png.py, the README's picture; DASHBOARD_PNG=path keeps a copy."""
    prometheus, dashboard, _ = observed
    out = render_png(prometheus.url, dashboard, tmp_path / "dashboard.png", seconds=30, rate=RATE)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DASHBOARD_PNG"):
        Path(os.environ["DASHBOARD_PNG"]).write_bytes(out.read_bytes())
