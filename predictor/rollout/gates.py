"""Metric gates: the canary judged on real traffic, from Prometheus, beside its predecessor.

After each step's interval, `run --prometheus URL` asks Prometheus' HTTP API about the window
that just passed, for the canary revision and the previous one side by side, from the
predictor's own series as the chart's PodMonitor / PodMonitoring labels them (`namespace`,
`inferenceservice`, `revision`; KServe/Knative name the revisions, see revisions()):

- requests: `increase(predictor_requests_total[window])`; fewer than --min-requests on the
  canary and the step fails: a quiet canary is not promoted blind;
- error rate: 5xx over all requests; fails when the canary's exceeds the previous one's by
  more than --max-error-rate;
- p99 latency from `predictor_request_duration_seconds`; fails when the canary's is above
  `prev p99 x --max-p99-ratio + --p99-slack-ms`;
- custom gates (--gates-file, like Flagger's MetricTemplates): named PromQL queries with
  `{{revision}}`, `{{previous}}`, `{{namespace}}`, `{{inferenceservice}}` and `{{interval}}`
  substituted, each with a `min` and/or a `max` its one value must keep within.

Every gate's measurements, threshold and verdict are kept for the step's line and the record.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
import yaml

from predictor.rollout import isvc as spec
from predictor.rollout import standard

TOKEN_ENV = "PROMETHEUS_BEARER_TOKEN"
SERVER_ERRORS = 'status=~"5.."'


@dataclass
class MetricThresholds:
    min_requests: int = 20
    max_error_rate: float = 0.0
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 50.0


@dataclass
class CustomGate:
    name: str
    query: str
    min: float | None = None
    max: float | None = None


@dataclass
class GateResult:
    name: str
    canary: float | None
    previous: float | None
    threshold: str
    passed: bool
    reason: str = ""

    def line(self) -> str:
        verdict = "pass" if self.passed else f"FAIL: {self.reason}"
        previous = (
            ""
            if self.previous is None and self.name.startswith("custom:")
            else (f" / prev {_fmt(self.previous)}")
        )
        return f"{self.name}: canary {_fmt(self.canary)}{previous} ({self.threshold}) {verdict}"


@dataclass
class GateReport:
    window: str
    canary_revision: str
    previous_revision: str
    results: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def reasons(self) -> list[str]:
        return [f"{r.name}: {r.reason}" for r in self.results if not r.passed]

    def as_json(self) -> dict:
        return {
            "window": self.window,
            "canaryRevision": self.canary_revision,
            "previousRevision": self.previous_revision,
            "passed": self.passed,
            "gates": [asdict(result) for result in self.results],
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "no data"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def window_text(seconds: float) -> str:
    """A PromQL duration: whole seconds, at least 1s."""
    return f"{max(1, math.ceil(seconds))}s"


def load_gates(path: str | None) -> list[CustomGate]:
    """A YAML or JSON list of {name, query, min?, max?}."""
    if path is None:
        return []
    loaded = yaml.safe_load(Path(path).read_text())
    if not isinstance(loaded, list) or not loaded:
        raise ValueError(f"{path}: expected a non-empty list of gates")
    gates = []
    for item in loaded:
        if not isinstance(item, dict) or not item.get("name") or not item.get("query"):
            raise ValueError(f"{path}: each gate needs a name and a query: {item!r}")
        if item.get("min") is None and item.get("max") is None:
            raise ValueError(f"{path}: gate {item['name']!r} needs a min or a max")
        unknown = set(item) - {"name", "query", "min", "max"}
        if unknown:
            raise ValueError(f"{path}: gate {item['name']!r} has unknown keys {sorted(unknown)}")
        gates.append(
            CustomGate(str(item["name"]), str(item["query"]), item.get("min"), item.get("max"))
        )
    return gates


class Prometheus:
    """Instant queries against Prometheus' HTTP API (or Google Managed Prometheus', with the
    bearer token in $PROMETHEUS_BEARER_TOKEN)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        token = os.environ.get(TOKEN_ENV)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def value(self, expr: str) -> float | None:
        """The sum of the query's result vector (a scalar's value); None when it is empty."""
        try:
            answer = self.session.get(
                f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout
            )
            body = answer.json()
        except (requests.RequestException, ValueError) as err:
            raise spec.RolloutError(f"Prometheus at {self.url} did not answer: {err}") from err
        if body.get("status") != "success":
            raise spec.RolloutError(
                f"Prometheus refused the query {expr!r}: {body.get('error') or answer.status_code}"
            )
        data = body["data"]
        if data.get("resultType") == "scalar":
            return float(data["result"][1])
        values = [float(item["value"][1]) for item in data.get("result") or []]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None


def revisions(obj: dict, canary_name: str | None) -> tuple[str, str]:
    """(canary, previous) as the `revision` label names them: Knative's revision names, or in
    Standard mode the predictors' Deployments (`{isvc}-{name}-predictor`)."""
    if spec.deployment_mode(obj) == spec.STANDARD:
        stable, *canaries = standard.variants(obj)
        name = standard.pick_canary(obj, canary_name)
        row = next(row for row in canaries if row["name"] == name)
        return str(row["service"]), str(stable["service"])
    component = spec.component_status(obj)
    latest = spec.traffic_entry(obj, tag="latest") or spec.traffic_entry(obj, latest=True) or {}
    previous = spec.traffic_entry(obj, tag="prev") or {}
    canary = latest.get("revisionName") or component.get("latestCreatedRevision")
    prev = previous.get("revisionName") or component.get("latestRolledoutRevision")
    if not canary or not prev:
        raise spec.RolloutError("the status names no latest and previous revision to compare")
    return canary, prev


def judge(
    prometheus: Prometheus,
    obj: dict,
    canary_name: str | None,
    window_seconds: float,
    thresholds: MetricThresholds,
    custom: list[CustomGate],
) -> GateReport:
    canary, previous = revisions(obj, canary_name)
    meta = obj["metadata"]
    window = window_text(window_seconds)
    labels = {
        "namespace": meta.get("namespace", ""),
        "inferenceservice": meta["name"],
    }
    report = GateReport(window, canary, previous)

    def selector(revision: str, extra: str = "") -> str:
        # GKE's PodMonitoring copies the Standard-mode pods' app label as it is (isvc.NAME);
        # the Prometheus Operator's PodMonitor strips the prefix: either matches.
        pattern = "(isvc\\\\.)?" + revision  # DNS labels: no regex characters
        parts = [f'{k}="{v}"' for k, v in labels.items()] + [f'revision=~"{pattern}"']
        return "{" + ",".join(parts) + (f",{extra}" if extra else "") + "}"

    def measure(revision: str) -> dict[str, float | None]:
        total = prometheus.value(
            f"sum(increase(predictor_requests_total{selector(revision)}[{window}]))"
        )
        server_errors = selector(revision, SERVER_ERRORS)
        errors = prometheus.value(
            f"sum(increase(predictor_requests_total{server_errors}[{window}]))"
        )
        p99 = prometheus.value(
            "histogram_quantile(0.99, sum by (le) (rate(predictor_request_duration_seconds_bucket"
            f"{selector(revision)}[{window}])))"
        )
        rate = None if not total else (errors or 0.0) / total
        p99_ms = None if p99 is None else p99 * 1000
        return {"requests": total or 0.0, "error_rate": rate, "p99_ms": p99_ms}

    got, before = measure(canary), measure(previous)
    enough = (got["requests"] or 0.0) >= thresholds.min_requests
    report.results.append(
        GateResult(
            "requests",
            got["requests"],
            before["requests"],
            f"canary >= {thresholds.min_requests} in {window}",
            enough,
            ""
            if enough
            else (
                f"too few requests to judge: the canary answered {_fmt(got['requests'])} in "
                f"{window}, --min-requests is {thresholds.min_requests}"
            ),
        )
    )
    if enough:
        canary_rate, prev_rate = got["error_rate"] or 0.0, before["error_rate"] or 0.0
        ok = canary_rate - prev_rate <= thresholds.max_error_rate
        report.results.append(
            GateResult(
                "error rate",
                canary_rate,
                prev_rate,
                f"canary - prev <= {thresholds.max_error_rate:g}",
                ok,
                "" if ok else f"5xx rate {canary_rate:.1%} against {prev_rate:.1%} on prev",
            )
        )
        if got["p99_ms"] is None or before["p99_ms"] is None:
            report.results.append(
                GateResult(
                    "p99 ms",
                    got["p99_ms"],
                    before["p99_ms"],
                    "not compared: no latency data on one side",
                    True,
                )
            )
        else:
            limit = before["p99_ms"] * thresholds.max_p99_ratio + thresholds.p99_slack_ms
            ok = got["p99_ms"] <= limit
            report.results.append(
                GateResult(
                    "p99 ms",
                    got["p99_ms"],
                    before["p99_ms"],
                    f"<= prev x {thresholds.max_p99_ratio:g} + {thresholds.p99_slack_ms:g} = "
                    f"{limit:.1f}",
                    ok,
                    "" if ok else f"p99 latency {got['p99_ms']:.1f} ms above {limit:.1f} ms",
                )
            )
    substitutions = {
        "revision": canary,
        "previous": previous,
        "interval": window,
        **labels,
    }
    for gate in custom:
        query = gate.query
        for key, value in substitutions.items():
            query = query.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
        value = prometheus.value(query)
        bounds = " and ".join(
            text
            for text in (
                None if gate.min is None else f">= {gate.min:g}",
                None if gate.max is None else f"<= {gate.max:g}",
            )
            if text
        )
        ok = (
            value is not None
            and (gate.min is None or value >= gate.min)
            and (gate.max is None or value <= gate.max)
        )
        reason = "" if ok else ("no data" if value is None else f"{_fmt(value)} is not {bounds}")
        report.results.append(GateResult(f"custom:{gate.name}", value, None, bounds, ok, reason))
    return report


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, default=str)
