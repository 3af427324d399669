"""Rollout webhooks at Flagger's points: an HTTP POST of the rollout's state as JSON.

    pre-rollout        before the canary starts; a non-2xx answer halts: nothing starts
    rollout            at each step, before its verdict; a non-2xx answer fails the step
    confirm-promotion  before promoting; a non-2xx answer halts the promotion (rolled back)
    post-rollout       after promotion or after the last step (notification only)
    rollback           after a rollback (notification only)

Each call is bounded: --webhook-timeout per attempt, --webhook-retries more attempts on a
connection error or a 5xx (a 4xx is an answer, not retried).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import requests

PHASES = ("pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback")
GATING = ("pre-rollout", "rollout", "confirm-promotion")


@dataclass
class WebhookResult:
    phase: str
    url: str
    status: int | None
    ok: bool
    detail: str = ""

    def line(self) -> str:
        answer = f"HTTP {self.status}" if self.status is not None else self.detail
        return f"webhook {self.phase} {self.url}: {answer}{'' if self.ok else ' (refused)'}"


def parse(specs: list[str]) -> dict[str, list[str]]:
    """`PHASE=URL` options -> {phase: [urls]}; ValueError on an unknown phase."""
    hooks: dict[str, list[str]] = {}
    for item in specs:
        phase, sep, url = item.partition("=")
        if not sep or phase not in PHASES or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"--webhook {item!r}: expected PHASE=URL with PHASE one of {', '.join(PHASES)}"
            )
        hooks.setdefault(phase, []).append(url)
    return hooks


class Webhooks:
    def __init__(self, hooks: dict[str, list[str]], timeout: float = 10.0, retries: int = 2):
        self.hooks = hooks
        self.timeout = timeout
        self.retries = retries

    def call(self, phase: str, payload: dict) -> list[WebhookResult]:
        return [
            self._post(phase, url, {**payload, "phase": phase}) for url in self.hooks.get(phase, [])
        ]

    def _post(self, phase: str, url: str, payload: dict) -> WebhookResult:
        detail = ""
        for attempt in range(self.retries + 1):
            try:
                answer = requests.post(url, json=payload, timeout=self.timeout)
            except requests.RequestException as err:
                detail = f"{type(err).__name__}: {err}"
            else:
                if answer.status_code < 500 or attempt == self.retries:
                    ok = 200 <= answer.status_code < 300
                    return WebhookResult(phase, url, answer.status_code, ok, answer.text[:200])
                detail = f"HTTP {answer.status_code}"
            if attempt < self.retries:
                time.sleep(min(2.0, 0.5 * (attempt + 1)))
        return WebhookResult(phase, url, None, False, detail)


def as_json(results: list[WebhookResult]) -> list[dict]:
    return [asdict(result) for result in results]
