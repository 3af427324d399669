"""Talking to the API server: read, patch, and wait (with a watch) until a condition holds."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from predictor.rollout import analysis, standard
from predictor.rollout import isvc as spec

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class WaitTimeout(spec.RolloutError):
    pass


class Cluster:
    """The custom-objects API for InferenceServices in one namespace."""

    def __init__(self, namespace: str | None, kubeconfig: str | None, context: str | None):
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            default_namespace = _read(IN_CLUSTER_NAMESPACE) or "default"
        else:
            config.load_kube_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                active = next((c for c in contexts if c["name"] == context), active)
            default_namespace = (active or {}).get("context", {}).get("namespace") or "default"
        self.namespace = namespace or default_namespace
        self.api = client.CustomObjectsApi()

    def service_target(self, role: str, service: str, port: int) -> analysis.Target:
        """Requests to a Service of the namespace through the API server's service proxy
        (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/...`), with this client's credentials:
        how a canary without a URL of its own (Standard mode) is reached from outside."""
        configuration = self.api.api_client.configuration
        headers = {  # the client's own credentials: its bearer token (a kubeconfig's, GKE's)
            auth["key"]: auth["value"]
            for auth in configuration.auth_settings().values()
            if auth.get("in") == "header" and auth.get("value")
        }
        cert = (
            (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        )
        return analysis.Target(
            role,
            f"{configuration.host}/api/v1/namespaces/{self.namespace}/services/{service}:{port}"
            "/proxy",
            ca_cert=configuration.ssl_ca_cert if configuration.verify_ssl else None,
            headers=headers,
            client_cert=cert,
            verify=bool(configuration.verify_ssl),
        )

    def _args(self) -> tuple[str, str, str, str]:
        return spec.GROUP, spec.VERSION, self.namespace, spec.PLURAL

    def get(self, name: str) -> dict:
        try:
            return self.api.get_namespaced_custom_object(*self._args(), name)
        except ApiException as err:
            raise spec.RolloutError(_api_message(err, f"reading {self.namespace}/{name}")) from err

    def patch(self, name: str, body: dict | list) -> dict:
        """Merge patch for a dict body, JSON patch for a list (what the client picks too)."""
        kind = "application/json-patch+json" if isinstance(body, list) else None
        try:
            if kind:
                return self.api.patch_namespaced_custom_object(
                    *self._args(), name, body, _content_type=kind
                )
            return self.api.patch_namespaced_custom_object(*self._args(), name, body)
        except ApiException as err:
            raise spec.RolloutError(_api_message(err, f"patching {self.namespace}/{name}")) from err

    def wait(
        self,
        name: str,
        done: Callable[[dict], bool],
        describe: Callable[[dict], str],
        timeout: float,
        what: str,
    ) -> dict:
        """Watch the object until `done(obj)` holds; raise WaitTimeout after `timeout` seconds
        with `describe(last object seen)` in the message."""
        deadline = time.monotonic() + timeout
        last = self.get(name)
        while not done(last):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"timed out after {timeout:g}s waiting for {what} "
                    f"on {self.namespace}/{name}: {describe(last)}"
                )
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.api.list_namespaced_custom_object,
                    *self._args(),
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=max(1, int(remaining + 0.999)),
                    _request_timeout=remaining + 5,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        last = event["object"]
                    elif event["type"] == "DELETED":
                        raise spec.RolloutError(f"{self.namespace}/{name} was deleted")
                    if done(last) or time.monotonic() >= deadline:
                        break
            except ApiException as err:
                raise spec.RolloutError(_api_message(err, f"watching {name}")) from err
            finally:
                stream.stop()
        return last


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _api_message(err: ApiException, doing: str) -> str:
    try:
        message = json.loads(err.body or "{}").get("message") or err.reason
    except ValueError:
        message = err.reason
    return f"{doing}: API server answered {err.status}: {message}"


# --- conditions --------------------------------------------------------------------------------


def observed(obj: dict, generation: int) -> bool:
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation


def canary_serving(generation: int, percent: int) -> Callable[[dict], bool]:
    """The latest revision is ready and gets `percent`% of the traffic (tag `latest`), the
    previous one the rest (tag `prev`)."""

    def done(obj: dict) -> bool:
        component = spec.component_status(obj)
        return (
            observed(obj, generation)
            and spec.is_ready(obj)
            and component.get("latestReadyRevision") == component.get("latestCreatedRevision")
            and spec.latest_percent(obj) == percent
            and (percent == 100 or spec.traffic_entry(obj, tag="prev") is not None)
        )

    return done


def fully_rolled_out(generation: int) -> Callable[[dict], bool]:
    """Ready, and the latest revision takes all the traffic."""
    return canary_serving(generation, 100)


def canary_drained(generation: int) -> Callable[[dict], bool]:
    """The latest revision gets no traffic (whether or not it ever became ready)."""

    def done(obj: dict) -> bool:
        traffic = spec.component_status(obj).get("traffic") or []
        return (
            observed(obj, generation)
            and spec.latest_percent(obj) == 0
            and sum(int(t.get("percent") or 0) for t in traffic) == 100
        )

    return done


def variant_serving(generation: int, name: str, percent: int) -> Callable[[dict], bool]:
    """Standard mode: the canary `name` is ready with `percent`% of the traffic, the stable
    predictor too, and KServe says all canaries are ready."""

    def done(obj: dict) -> bool:
        status = standard.canary_status(obj, name) or {}
        return (
            observed(obj, generation)
            and spec.is_ready(obj)
            and status.get("ready") is True
            and int(status.get("trafficPercent") or 0) == percent
            and spec.condition(obj, standard.CANARY_CONDITION).get("status") == "True"
        )

    return done


def variants_gone(generation: int, names: list[str]) -> Callable[[dict], bool]:
    """Standard mode: the controller has seen the spec without these canaries (promoted or
    rolled back) and the stable predictor is ready."""

    def done(obj: dict) -> bool:
        return (
            observed(obj, generation)
            and spec.is_ready(obj)
            and all(standard.canary_status(obj, name) is None for name in names)
        )

    return done


def describe(obj: dict) -> str:
    """One line on the state of the object, for progress and timeout messages."""
    if spec.deployment_mode(obj) == spec.STANDARD:
        return standard.describe(obj)
    component = spec.component_status(obj)
    ready = spec.condition(obj)
    traffic = ", ".join(_route(t) for t in component.get("traffic") or [])
    text = (
        f"generation {obj.get('metadata', {}).get('generation')} "
        f"(observed {(obj.get('status') or {}).get('observedGeneration')}), "
        f"latest created {component.get('latestCreatedRevision')}, "
        f"latest ready {component.get('latestReadyRevision')}, traffic [{traffic}], "
        f"Ready={ready.get('status', 'Unknown')}"
    )
    if ready.get("status") != "True" and (ready.get("reason") or ready.get("message")):
        text += f" ({ready.get('reason') or ''}: {ready.get('message') or ''})"
    return text


def _route(entry: dict) -> str:
    tag = f"({entry['tag']})" if entry.get("tag") else ""
    return f"{entry.get('revisionName')}{tag}={entry.get('percent', 0)}%"
