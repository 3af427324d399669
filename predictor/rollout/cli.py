"""`python -m predictor.rollout`: canary rollouts of an InferenceService, in either of
KServe's deployment modes (read from the object: status.deploymentMode or its annotation).

    status NAME [-o table|json]
    start NAME (--image IMG | --storage-uri URI) --percent N [--canary-name N]
    promote NAME [--canary-name N]
    rollback NAME [--canary-name N]
    run NAME (--image IMG | --storage-uri URI) [--steps 10,25,50,100] [--interval 60s] ...

Knative mode: the canary is the latest revision (`canaryTrafficPercent`), reached for analysis
by its `latest-` tag URL. Standard mode: the canary is an entry of `spec.canary` with a
Deployment and Service of its own, reached for analysis through the API server's service proxy.

Global options (before or after the subcommand): -n NAMESPACE, --kubeconfig, --context,
--timeout 600s (every wait), --dry-run (print the patches, change nothing).
Exit status: 0 done, 1 failed (analysis failed and rolled back, timeout, API error), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from predictor.rollout import analysis, gates, standard, webhooks
from predictor.rollout import isvc as spec
from predictor.rollout.wait import (
    Cluster,
    canary_drained,
    canary_serving,
    describe,
    fully_rolled_out,
    variant_serving,
    variants_gone,
)


class Output:
    """Where progress lines go: stdout, or stderr with `run --output json` (stdout then carries
    the rollout's record alone)."""

    stream = sys.stdout


def say(text: str) -> None:
    print(text, file=Output.stream, flush=True)


def duration(text: str) -> float:
    """`600s`, `1m`, `1.5h`, `250ms` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 10m)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return float(match.group(1)) * scale


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return seconds


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def steps(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"steps are percents, e.g. 10,25,50,100: {err}") from err
    if not values or any(not 0 <= v <= 100 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(
            "steps must rise strictly within 0..100, e.g. 10,50,100 (a first 0 is a dark launch)"
        )
    if values[0] == 100:
        raise argparse.ArgumentTypeError(
            "the first step cannot be 100: it would promote a canary that was never started "
            "(start at a lower percent, e.g. 10,100)"
        )
    return values


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the kubeconfig context's, or default)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)",
    )
    parser.add_argument("--context", default=default(None), help="kubeconfig context")
    parser.add_argument(
        "--timeout",
        type=duration,
        default=default(600.0),
        help="longest wait for each change to take effect (default 600s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=default(False),
        help="print the patches instead of sending them",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--image", help="new predictor image")
    group.add_argument("--storage-uri", help="new model storage URI (gs://, s3://, pvc://, ...)")


def _canary_name_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--canary-name", help=f"Standard mode: {text}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictor.rollout",
        description="Canary rollouts of a KServe InferenceService.",
    )
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", parents=[common], help="revisions, traffic, conditions")
    status.add_argument("name")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")

    start = commands.add_parser("start", parents=[common], help="send N%% to a new model")
    start.add_argument("name")
    _model_options(start)
    start.add_argument("--percent", type=int, required=True, help="canary traffic percent")
    new_name = "the canary's name in spec.canary (default: from the image tag or storage URI)"
    _canary_name_option(start, new_name)

    for command, text, which in (
        (
            "promote",
            "send all traffic to the canary",
            "the canary to promote (default: the only one)",
        ),
        (
            "rollback",
            "send no traffic to the canary, restore the old spec",
            "the canary to remove (default: all of them)",
        ),
    ):
        parser_ = commands.add_parser(command, parents=[common], help=text)
        parser_.add_argument("name")
        _canary_name_option(parser_, which)

    run = commands.add_parser("run", parents=[common], help="progressive delivery with analysis")
    run.add_argument("name")
    _model_options(run)
    run.add_argument(
        "--steps",
        type=steps,
        default=[10, 25, 50, 100],
        help="canary percents; 100 promotes (default 10,25,50,100)",
    )
    run.add_argument(
        "--interval",
        type=duration,
        default=60.0,
        help="pause after each passed analysis before the next step (default 60s)",
    )
    run.add_argument(
        "--ingress",
        help="send analysis requests to this address (http://IP or https://IP), with the tag "
        "URL's host name as Host header (and, over HTTPS, as TLS server name)",
    )
    run.add_argument(
        "--ca-cert",
        help="CA bundle (PEM) that the revisions' TLS certificates must chain to, e.g. the "
        "gateway's own CA (default: the system's)",
    )
    run.add_argument(
        "--model-name",
        help="model in the request paths (default: the one the "
        "revision lists at /v1/models, else NAME)",
    )
    _canary_name_option(run, new_name)
    run.add_argument(
        "--service-port",
        type=int,
        default=80,
        help="Standard mode: the port of the predictors' Services that analysis requests go to "
        "through the API server's service proxy (default 80, KServe's)",
    )
    run.add_argument("--requests-file", help="JSON list of {protocol: v1|v2, body: {...}}")
    run.add_argument("--rounds", type=int, default=10, help="times to send the request set")
    run.add_argument("--request-timeout", type=duration, default=10.0)
    defaults = analysis.Thresholds()
    run.add_argument(
        "--synthetic",
        action="store_true",
        help="with --prometheus, also send the synthetic requests (alone without --prometheus)",
    )
    gate_defaults = gates.MetricThresholds()
    run.add_argument(
        "--prometheus",
        help="judge each step on real traffic: Prometheus' base URL (GKE Managed Prometheus: "
        "https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus, "
        "with $PROMETHEUS_BEARER_TOKEN)",
    )
    run.add_argument(
        "--metrics-window",
        type=duration,
        help="the window the gates query at each step (default: the time since the step "
        "began, i.e. the synthetic requests if any and the --interval each step waits)",
    )
    run.add_argument(
        "--min-requests",
        type=int,
        default=gate_defaults.min_requests,
        help="fewest requests the canary must answer in the window to be judged (default 20)",
    )
    run.add_argument("--max-p99-ratio", type=float, default=gate_defaults.max_p99_ratio)
    run.add_argument("--p99-slack-ms", type=float, default=gate_defaults.p99_slack_ms)
    run.add_argument("--gates-file", help="YAML/JSON list of {name, query, min?, max?}")
    run.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="PHASE=URL",
        help=f"POST the rollout's state at PHASE ({', '.join(webhooks.PHASES)}); repeatable",
    )
    run.add_argument("--webhook-timeout", type=positive_duration, default=10.0)
    run.add_argument("--webhook-retries", type=non_negative_int, default=2)
    run.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="json: progress on stderr, the rollout's whole record as JSON on stdout",
    )
    run.add_argument("--max-error-rate", type=float, default=defaults.max_error_rate)
    run.add_argument("--max-mismatch-rate", type=float, default=defaults.max_mismatch_rate)
    run.add_argument("--max-p95-ratio", type=float, default=defaults.max_p95_ratio)
    run.add_argument("--p95-slack-ms", type=float, default=defaults.p95_slack_ms)
    run.add_argument("--tolerance", type=float, default=defaults.tolerance)
    return parser


class Rollout:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cluster = Cluster(args.namespace, args.kubeconfig, args.context)
        self.where = f"{self.cluster.namespace}/{args.name}"
        # Standard mode, dry run: the object as the patches so far would leave it.
        self._planned: dict | None = None
        self.changed = False  # this run's first patch went through: a failure rolls it back
        self.promoted = False  # the promotion's patch went through

    def patch(self, body: dict | list, why: str) -> dict | None:
        """Send (or with --dry-run print) a patch; the object after it, None on a dry run."""
        kind = "json-patch" if isinstance(body, list) else "merge-patch"
        if self.args.dry_run:
            say(f"# {why}: PATCH ({kind}) inferenceservices {self.where}")
            say(json.dumps(body, indent=2))
            return None
        say(f"{why}: patching {self.where}")
        patched = self.cluster.patch(self.args.name, body)
        self.changed = True
        return patched

    def wait(self, patched: dict, condition, what: str) -> dict:
        generation = int(patched["metadata"].get("generation") or 0)
        say(f"waiting up to {self.args.timeout:g}s for {what}")
        obj = self.cluster.wait(
            self.args.name, condition(generation), describe, self.args.timeout, what
        )
        say(f"  {describe(obj)}")
        return obj

    def current(self) -> dict:
        return self._planned if self._planned is not None else self.cluster.get(self.args.name)

    @staticmethod
    def standard(obj: dict) -> bool:
        return spec.deployment_mode(obj) == spec.STANDARD

    # --- commands ------------------------------------------------------------------------------

    def status(self) -> int:
        obj = self.cluster.get(self.args.name)
        if self.standard(obj):
            info = standard.summary(obj)
            text = standard.format_summary(info)
        else:
            info = spec.summary(obj)
            text = spec.format_summary(info)
        say(json.dumps(info, indent=2) if self.args.output == "json" else text)
        return 0

    def start(self, percent: int | None = None) -> dict | None:
        percent = self.args.percent if percent is None else percent
        obj = self.cluster.get(self.args.name)
        if self.standard(obj):
            return self._start_variant(obj, percent)
        body = spec.start_patch(obj, percent, self.args.image, self.args.storage_uri)
        patched = self.patch(body, f"start canary at {percent}%")
        if patched is None:
            return None
        return self.wait(
            patched,
            lambda g: canary_serving(g, percent),
            f"the new revision to be ready with {percent}% of the traffic",
        )

    def _start_variant(self, obj: dict, percent: int) -> dict | None:
        args = self.args
        name = args.canary_name or standard.default_canary_name(obj, args.image, args.storage_uri)
        args.canary_name = name  # the later steps of `run` move this one
        body = standard.start_patch(obj, name, percent, args.image, args.storage_uri)
        patched = self.patch(body, f"start canary {name!r} at {percent}%")
        if patched is None:
            self._planned = {**obj, "spec": {**obj["spec"], "canary": body["spec"]["canary"]}}
            return None
        return self.wait(
            patched,
            lambda g: variant_serving(g, name, percent),
            f"canary {name!r} to be ready with {percent}% of the traffic",
        )

    def set_percent(self, percent: int) -> dict | None:
        obj = self.current()
        if self.standard(obj):
            name = standard.pick_canary(obj, self.args.canary_name)
            body: dict | list = standard.percent_patch(obj, name, percent)
            patched = self.patch(body, f"canary {name!r} to {percent}%")
            if patched is None:
                return None
            return self.wait(
                patched,
                lambda g: variant_serving(g, name, percent),
                f"canary {name!r} to get {percent}% of the traffic",
            )
        patched = self.patch(spec.percent_patch(percent), f"canary to {percent}%")
        if patched is None:
            return None
        return self.wait(
            patched,
            lambda g: canary_serving(g, percent),
            f"the new revision to get {percent}% of the traffic",
        )

    def promote(self) -> int:
        obj = self.current()
        if self.standard(obj):
            name = standard.pick_canary(obj, self.args.canary_name)
            patched = self.patch(standard.promote_patch(obj, name), f"promote canary {name!r}")
            self.promoted = patched is not None
            if patched is not None:
                self.wait(
                    patched,
                    lambda g: variants_gone(g, [name]),
                    f"canary {name!r} to serve as the stable predictor",
                )
                say(
                    f"promoted: {self.where} serves canary {name!r}'s model to all traffic "
                    f"(its Deployment {standard.service_name(self.args.name, name)} is the stable "
                    "one now)"
                )
            return 0
        patched = self.patch(spec.promote_patch(), "promote")
        self.promoted = patched is not None
        if patched is not None:
            self.wait(patched, fully_rolled_out, "the new revision to get 100% of the traffic")
            say(f"promoted: {self.where} serves the new model to all traffic")
        return 0

    def rollback(self) -> int:
        obj = self.cluster.get(self.args.name)
        if self.standard(obj):
            return self._remove_variants(obj)
        drain, restore = spec.rollback_patches(obj)
        if restore is None and "canaryTrafficPercent" not in spec.predictor_of(obj):
            say(f"nothing to roll back: no rollout in progress on {self.where}")
            return 0
        patched = self.patch(drain, "rollback: canary to 0%")
        if patched is not None:
            self.wait(patched, canary_drained, "the previous revision to get all the traffic")
        if restore is None:
            say("no previous spec recorded (no rollout in progress): left the canary at 0%")
            return 0
        patched = self.patch(restore, "rollback: restore the previous predictor spec")
        if patched is not None:
            self.wait(patched, fully_rolled_out, "a revision of the previous spec to take over")
            say(f"rolled back: {self.where} serves the previous model")
        return 0

    def _remove_variants(self, obj: dict) -> int:
        if not standard.canaries_of(obj):
            say(f"nothing to roll back: no canary on {self.where}")
            return 0
        name = self.args.canary_name
        names = [standard.pick_canary(obj, name)] if name else standard.canary_names(obj)
        listed = ", ".join(repr(n) for n in names)
        body = standard.rollback_patch(obj, name)
        patched = self.patch(body, f"rollback: remove canary {listed}")
        if patched is not None:
            self.wait(
                patched,
                lambda g: variants_gone(g, names),
                "the stable predictor to take all the traffic",
            )
            say(f"rolled back: {self.where} serves the stable model only")
        return 0

    def run(self) -> int:
        args = self.args
        thresholds = analysis.Thresholds(
            args.max_error_rate,
            args.max_mismatch_rate,
            args.max_p95_ratio,
            args.p95_slack_ms,
            args.tolerance,
        )
        request_set = analysis.load_requests(args.requests_file)
        synthetic = args.synthetic or not args.prometheus
        custom = gates.load_gates(args.gates_file)
        self.hooks = webhooks.Webhooks(
            webhooks.parse(args.webhook), args.webhook_timeout, args.webhook_retries
        )
        prometheus = gates.Prometheus(args.prometheus) if args.prometheus else None
        self.record: dict = {
            "inferenceservice": args.name,
            "namespace": self.cluster.namespace,
            "model": {"image": args.image, "storageUri": args.storage_uri},
            "steps": [],
            "webhooks": [],
        }
        if not self._hooks_allow("pre-rollout", {"step": 0, "percent": 0}):
            return self.finish(1, "halted", "the pre-rollout webhook refused: nothing started")
        total = len(args.steps)
        for number, percent in enumerate(args.steps, start=1):
            say(f"[step {number}/{total}] {percent}%")
            step: dict = {"step": number, "percent": percent}
            self.record["steps"].append(step)
            try:
                if percent == 100:
                    if not self._hooks_allow("confirm-promotion", step):
                        return self.abort("the confirm-promotion webhook refused the promotion")
                    self.promote()
                    step["verdict"] = "promoted"
                    continue
                obj = self.start(percent) if number == 1 else self.set_percent(percent)
                if obj is None:  # dry run
                    continue
                self.record["deploymentMode"] = spec.deployment_mode(obj)
                self.record["canaryName"] = args.canary_name
                serving_since = time.monotonic()  # the canary has this step's share from now
                failures, examples = [], []
                if synthetic:
                    report = self.analyse(obj, request_set, thresholds)
                    say(f"  analysis: {report.line()}")
                    step["synthetic"] = {"passed": report.passed, "line": report.line()}
                    failures += report.reasons
                    examples += report.examples
                if prometheus is not None:
                    say(
                        f"  measuring real traffic for {args.interval:g}s "
                        f"(Prometheus {prometheus.url})"
                    )
                    time.sleep(args.interval)
                    # The whole time the canary had this step's share, synthetic requests
                    # included, unless a window is given.
                    window = args.metrics_window or time.monotonic() - serving_since
                    verdict = gates.judge(
                        prometheus,
                        self.cluster.get(args.name),
                        args.canary_name,
                        window,
                        gates.MetricThresholds(
                            args.min_requests,
                            args.max_error_rate,
                            args.max_p99_ratio,
                            args.p99_slack_ms,
                        ),
                        custom,
                    )
                    say(
                        f"  gates over {verdict.window}: canary {verdict.canary_revision}, "
                        f"prev {verdict.previous_revision}"
                    )
                    for result in verdict.results:
                        say(f"    {result.line()}")
                    step["gates"] = verdict.as_json()
                    failures += verdict.reasons
                if not self._hooks_allow("rollout", step):
                    failures.append("the rollout webhook refused the step")
            except spec.RolloutError as err:
                return self.abort(str(err))
            except Exception as err:  # noqa: BLE001 - the API server or Prometheus unreachable...
                return self.abort(f"{type(err).__name__}: {err}")
            if failures:
                step["verdict"] = "failed"
                return self.abort("; ".join(failures), examples)
            step["verdict"] = "passed"
            say("  analysis passed")
            if prometheus is None and number < total and args.interval > 0:
                say(f"  next step in {args.interval:g}s")
                time.sleep(args.interval)
        if args.dry_run:
            return self.finish(0, "dry run")
        self._hooks_allow("post-rollout", {"step": total, "percent": args.steps[-1]})
        if args.steps[-1] < 100:
            say(f"canary left at {args.steps[-1]}%: `promote` or `rollback` {args.name} to finish")
            return self.finish(0, f"left at {args.steps[-1]}%")
        return self.finish(0, "promoted")

    def _hooks_allow(self, phase: str, step: dict) -> bool:
        """Call the phase's webhooks with the rollout's state; whether none refused (only the
        gating phases can refuse). A dry run calls none."""
        if self.args.dry_run:
            return True
        payload = {
            "name": self.args.name,
            "namespace": self.cluster.namespace,
            "deploymentMode": self.record.get("deploymentMode"),
            "canaryName": self.args.canary_name,
            "model": self.record["model"],
            "step": step.get("step"),
            "percent": step.get("percent"),
            "verdict": step.get("verdict"),
        }
        results = self.hooks.call(phase, payload)
        for result in results:
            say(f"  {result.line()}")
        self.record["webhooks"] += webhooks.as_json(results)
        return phase not in webhooks.GATING or all(result.ok for result in results)

    def finish(self, code: int, outcome: str, reason: str = "") -> int:
        """Close the record (printed as JSON with --output json) and exit with `code`."""
        record = getattr(self, "record", None)
        if record is not None:
            record.update(outcome=outcome, reason=reason)
            if self.args.output == "json":
                print(gates.dumps(record), flush=True)
        return code

    def targets(self, obj: dict) -> dict[str, analysis.Target]:
        """Where analysis requests go: `prev` is what serves now, `latest` the canary."""
        if self.standard(obj):
            name = standard.pick_canary(obj, self.args.canary_name)
            stable, *canaries = standard.variants(obj)
            canary = next(row for row in canaries if row["name"] == name)
            port = self.args.service_port
            return {
                "prev": self.cluster.service_target("prev", stable["service"], port),
                "latest": self.cluster.service_target("latest", canary["service"], port),
            }
        targets = {}
        for tag in ("prev", "latest"):
            entry = spec.traffic_entry(obj, tag=tag)
            if not entry or not entry.get("url"):
                raise spec.RolloutError(f"no `{tag}` tag URL in the status: is tag routing on?")
            targets[tag] = analysis.Target.for_tag(
                tag, entry["url"], self.args.ingress, self.args.ca_cert
            )
        return targets

    def analyse(self, obj: dict, request_set: list[dict], thresholds: analysis.Thresholds):
        targets = self.targets(obj)
        model = (
            self.args.model_name
            or analysis.discover_model_name(targets["prev"], self.args.request_timeout)
            or self.args.name
        )
        say(
            f"  analysing: {len(request_set)} request(s) x {self.args.rounds} to model {model!r} "
            f"at latest {targets['latest'].base_url} and prev {targets['prev'].base_url}"
            + (
                f" (Host {targets['latest'].host} / {targets['prev'].host})"
                if targets["latest"].host
                else ""
            )
        )
        return analysis.analyse(
            targets["prev"],
            targets["latest"],
            model,
            request_set,
            self.args.rounds,
            thresholds,
            self.args.request_timeout,
        )

    def abort(self, reason: str, examples: list[str] | None = None) -> int:
        say(f"canary failed: {reason}")
        for example in examples or []:
            say(f"  e.g. {example}")
        if not self.changed:
            # Nothing of this run is there to undo (a refused start, say): whatever canary
            # the object has is someone else's.
            print(f"error: {reason}; nothing was changed", file=sys.stderr, flush=True)
            return self.finish(1, "halted", reason)
        if self.promoted:
            # The promotion's patch is in: there is no canary left to roll back to.
            print(
                f"error: {self.where} was promoted but it was not confirmed: {reason}; see "
                "`status`",
                file=sys.stderr,
                flush=True,
            )
            return self.finish(1, "promotion not confirmed", reason)
        say("rolling back")
        try:
            self.rollback()
        except spec.RolloutError as err:
            print(f"error: rollback failed too: {err}", file=sys.stderr, flush=True)
            return self.finish(1, "rollback failed", f"{reason}; rollback: {err}")
        if hasattr(self, "hooks"):
            self._hooks_allow("rollback", {"verdict": "rolled back"})
        print(
            f"error: canary of {self.where} failed and was rolled back: {reason}",
            file=sys.stderr,
            flush=True,
        )
        return self.finish(1, "rolled back", reason)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_record = args.command == "run" and args.output == "json"
    Output.stream = sys.stderr if json_record else sys.stdout
    if args.command == "run":
        # The option files and webhooks are read before anything changes: a bad one is a
        # usage error (exit 2), never a half-started rollout.
        try:
            analysis.load_requests(args.requests_file)
            gates.load_gates(args.gates_file)
            webhooks.parse(args.webhook)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 2
    try:
        rollout = Rollout(args)
        if args.command == "status":
            return rollout.status()
        if args.command == "start":
            rollout.start()
            return 0
        if args.command == "promote":
            return rollout.promote()
        if args.command == "rollback":
            return rollout.rollback()
        return rollout.run()
    except spec.RolloutError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted: {args.name} is left as it is; see `status`, then `promote` or "
            "`rollback`",
            file=sys.stderr,
            flush=True,
        )
        return 130
