"""Canary analysis: the same real V1/V2 requests to the `prev` and `latest` revisions, compared.

A canary fails when, against thresholds, it
- answers with errors more often than the previous revision does,
- answers differently (numbers compared with a tolerance), or
- is slower: its p95 latency above `prev p95 * max_p95_ratio + p95_slack_ms`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

DEFAULT_REQUESTS = [
    {"protocol": "v1", "body": {"instances": [1.0, 2.0, 3.0]}},
    {
        "protocol": "v2",
        "body": {
            "inputs": [
                {"name": "input-0", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 3.0]}
            ]
        },
    },
]


@dataclass
class Thresholds:
    max_error_rate: float = 0.0  # errors of latest minus errors of prev, over requests sent
    max_mismatch_rate: float = 0.0  # answers that differ, over requests both answered
    max_p95_ratio: float = 1.5
    p95_slack_ms: float = 50.0  # so that two fast revisions never fail on noise
    tolerance: float = 1e-4


@dataclass
class Target:
    """Where to send a revision's requests: its tag URL, or an ingress address with the tag's
    host name (the Host header, and over HTTPS also the TLS server name and the name the
    certificate must carry), verified with `ca_cert` when given."""

    name: str
    base_url: str
    host: str | None = None
    ca_cert: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    client_cert: tuple[str, str] | None = None
    verify: bool = True

    @classmethod
    def for_tag(
        cls, name: str, tag_url: str, ingress: str | None, ca_cert: str | None = None
    ) -> Target:
        if ingress is None:
            return cls(name, tag_url.rstrip("/"), ca_cert=ca_cert)
        return cls(name, ingress.rstrip("/"), host=urlsplit(tag_url).netloc, ca_cert=ca_cert)

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.headers)
        session.cert = self.client_cert
        session.verify = self.verify
        if self.host:
            session.headers["Host"] = self.host
        host_name = urlsplit(f"//{self.host}").hostname if self.host else None
        session.mount("https://", _TargetAdapter(host_name, self.ca_cert))
        return session


class _TargetAdapter(HTTPAdapter):
    """HTTPS to an address (the ingress) on behalf of a host name: the gateway picks the
    route's certificate by the TLS server name (SNI), and the certificate is checked for the
    host name, not the address, against `ca_cert` when given (which REQUESTS_CA_BUNDLE
    would otherwise replace)."""

    def __init__(self, host_name: str | None, ca_cert: str | None) -> None:
        self.host_name = host_name
        self.ca_cert = ca_cert
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        if self.host_name:
            kwargs["server_hostname"] = self.host_name
            kwargs["assert_hostname"] = self.host_name
        super().init_poolmanager(*args, **kwargs)

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        if self.ca_cert:
            kwargs["verify"] = self.ca_cert
        return super().send(request, **kwargs)


@dataclass
class Answer:
    ok: bool
    seconds: float
    value: object = None
    error: str = ""


@dataclass
class Report:
    passed: bool
    reasons: list[str]
    sent: int
    errors: dict[str, int]
    mismatches: int
    p95_ms: dict[str, float]
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.sent} requests each: errors latest {self.errors['latest']} / prev "
            f"{self.errors['prev']}, mismatches {self.mismatches}, p95 latest "
            f"{self.p95_ms['latest']:.1f} ms / prev {self.p95_ms['prev']:.1f} ms"
        )


def load_requests(path: str | None) -> list[dict]:
    """A JSON list of {"protocol": "v1"|"v2", "body": {...}}; the built-in set without a path."""
    if path is None:
        return DEFAULT_REQUESTS
    loaded = json.loads(Path(path).read_text())
    if not isinstance(loaded, list) or not loaded:
        raise ValueError(f"{path}: expected a non-empty JSON list of requests")
    for item in loaded:
        if not isinstance(item, dict) or item.get("protocol") not in ("v1", "v2"):
            raise ValueError(f"{path}: each request needs protocol v1 or v2: {item!r}")
        if not isinstance(item.get("body"), dict):
            raise ValueError(f"{path}: each request needs a JSON object body: {item!r}")
    return loaded


def _path(protocol: str, model: str) -> str:
    return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"


def _comparable(protocol: str, answer: dict) -> object:
    """The part of an answer that must match: predictions, or outputs without ids/versions."""
    if protocol == "v1":
        return answer.get("predictions")
    return [
        {k: out.get(k) for k in ("name", "datatype", "shape", "data")}
        for out in answer.get("outputs") or []
    ]


def same(a: object, b: object, tolerance: float) -> bool:
    """Equal JSON, numbers within `tolerance` (relative or absolute)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    return a == b


def send(
    session: requests.Session, target: Target, model: str, request: dict, timeout: float
) -> Answer:
    url = target.base_url + _path(request["protocol"], model)
    start = time.perf_counter()
    try:
        response = session.post(url, json=request["body"], timeout=timeout)
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            return Answer(
                False, seconds, error=f"HTTP {response.status_code}: {response.text[:200]}"
            )
        return Answer(True, seconds, value=_comparable(request["protocol"], response.json()))
    except (requests.RequestException, ValueError) as err:
        return Answer(False, time.perf_counter() - start, error=f"{type(err).__name__}: {err}")


def p95(seconds: list[float]) -> float:
    """Nearest-rank 95th percentile, in milliseconds."""
    if not seconds:
        return 0.0
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000


def analyse(
    prev: Target,
    latest: Target,
    model: str,
    request_set: list[dict],
    rounds: int,
    thresholds: Thresholds,
    timeout: float = 10.0,
) -> Report:
    """Send every request of the set `rounds` times to both revisions, alternating, and judge."""
    errors = {"prev": 0, "latest": 0}
    latencies: dict[str, list[float]] = {"prev": [], "latest": []}
    mismatches = both_answered = sent = 0
    examples: list[str] = []
    sessions = {target.name: target.session() for target in (prev, latest)}
    try:
        for _ in range(rounds):
            for request in request_set:
                sent += 1
                answers = {}
                for target in (prev, latest):
                    answer = send(sessions[target.name], target, model, request, timeout)
                    answers[target.name] = answer
                    latencies[target.name].append(answer.seconds)
                    if not answer.ok:
                        errors[target.name] += 1
                        _example(examples, f"{target.name} {request['protocol']}: {answer.error}")
                if answers["prev"].ok and answers["latest"].ok:
                    both_answered += 1
                    if not same(
                        answers["prev"].value, answers["latest"].value, thresholds.tolerance
                    ):
                        mismatches += 1
                        _example(
                            examples,
                            f"{request['protocol']} answers differ: prev "
                            f"{json.dumps(answers['prev'].value)[:120]} latest "
                            f"{json.dumps(answers['latest'].value)[:120]}",
                        )
    finally:
        for session in sessions.values():
            session.close()
    p95_ms = {name: p95(values) for name, values in latencies.items()}
    reasons = []
    if sent and errors["prev"] == sent:
        # Nothing to compare with: the request set (or --model-name) does not fit the model
        # that serves now, or it cannot be reached. Not a reason to trust the canary.
        reasons.append(
            f"prev answered none of the {sent} requests: nothing to judge the canary against "
            "(check the request set, --model-name and that prev is reachable)"
        )
    error_rate = (errors["latest"] - errors["prev"]) / max(sent, 1)
    if error_rate > thresholds.max_error_rate:
        reasons.append(
            f"error rate {error_rate:.0%} above {thresholds.max_error_rate:.0%} "
            f"({errors['latest']} errors on latest, {errors['prev']} on prev)"
        )
    mismatch_rate = mismatches / both_answered if both_answered else 0.0
    if mismatch_rate > thresholds.max_mismatch_rate:
        reasons.append(
            f"{mismatches} of {both_answered} answers differ from prev "
            f"({mismatch_rate:.0%} > {thresholds.max_mismatch_rate:.0%})"
        )
    limit = p95_ms["prev"] * thresholds.max_p95_ratio + thresholds.p95_slack_ms
    if p95_ms["latest"] > limit:
        reasons.append(
            f"p95 latency {p95_ms['latest']:.1f} ms above {limit:.1f} ms "
            f"(prev {p95_ms['prev']:.1f} ms x {thresholds.max_p95_ratio:g} "
            f"+ {thresholds.p95_slack_ms:g} ms)"
        )
    return Report(not reasons, reasons, sent, errors, mismatches, p95_ms, examples)


def _example(examples: list[str], text: str) -> None:
    """Keep up to three different examples of what went wrong."""
    if len(examples) < 3 and text not in examples:
        examples.append(text)


def discover_model_name(target: Target, timeout: float = 10.0) -> str | None:
    """The one model a revision serves, from `GET /v1/models` (None if not exactly one)."""
    try:
        with target.session() as session:
            response = session.get(f"{target.base_url}/v1/models", timeout=timeout)
        models = response.json().get("models") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return models[0] if isinstance(models, list) and len(models) == 1 else None
