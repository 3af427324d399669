"""Reading an InferenceService's rollout state and building the patches that change it.

Everything here is a pure function of the object as the API server returns it (a dict), so the
patches can be printed (`--dry-run`), tested and validated without a cluster.

Knative (Serverless) mode is here; Standard (RawDeployment) mode's `spec.canary` is standard.py.

KServe's canary model in Knative mode, in short: `spec.predictor.canaryTrafficPercent` splits
the traffic between the latest revision (the one built from the current spec) and the last
revision that was rolled out to 100%. With `serving.kserve.io/enable-tag-routing: "true"` the two
get their own URLs, tagged `latest` and `prev`, listed in `status.components.predictor.traffic`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"

TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
# The predictor spec from before `start`, so that `rollback` can restore it exactly.
PREVIOUS_SPEC_ANNOTATION = "rollout.torch-predictor.io/previous-spec"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
STANDARD, KNATIVE = "Standard", "Knative"
# KServe's names for its modes, the deprecated ones included (they mean the same).
MODES = {"Standard": STANDARD, "RawDeployment": STANDARD, "Knative": KNATIVE, "Serverless": KNATIVE}
# The container KServe serves from when the predictor lists its own containers.
MAIN_CONTAINER = "kserve-container"
STORAGE_URI_ENV = "STORAGE_URI"


class RolloutError(Exception):
    """A rollout cannot go on; the message says why."""


def predictor_of(isvc: dict) -> dict:
    predictor = isvc.get("spec", {}).get("predictor")
    if not isinstance(predictor, dict):
        raise RolloutError(f"{name_of(isvc)} has no spec.predictor")
    return predictor


def name_of(isvc: dict) -> str:
    meta = isvc.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def annotations_of(isvc: dict) -> dict:
    return isvc.get("metadata", {}).get("annotations") or {}


def deployment_mode(isvc: dict) -> str:
    """STANDARD or KNATIVE: what the controller reports (status.deploymentMode), else the
    annotation, else KServe's own default since 0.20 (Standard)."""
    mode = (isvc.get("status") or {}).get("deploymentMode") or annotations_of(isvc).get(
        DEPLOYMENT_MODE_ANNOTATION
    )
    if mode is None:
        return STANDARD
    if mode not in MODES:
        raise RolloutError(
            f"{name_of(isvc)} runs in deployment mode {mode!r}: canaries need Standard or Knative"
        )
    return MODES[mode]


def _main_container_index(containers: list) -> int:
    for index, container in enumerate(containers):
        if container.get("name") == MAIN_CONTAINER:
            return index
    return 0


def model_of(predictor: dict) -> dict:
    """The image and storage URI the predictor serves (either may be None)."""
    if isinstance(predictor.get("model"), dict):
        model = predictor["model"]
        return {"image": model.get("image"), "storageUri": model.get("storageUri")}
    containers = predictor.get("containers") or []
    if containers:
        container = containers[_main_container_index(containers)]
        env = {e.get("name"): e.get("value") for e in container.get("env") or []}
        return {"image": container.get("image"), "storageUri": env.get(STORAGE_URI_ENV)}
    return {"image": None, "storageUri": None}


def with_model(predictor: dict, image: str | None, storage_uri: str | None) -> dict:
    """The part of a merge patch for spec.predictor that serves another model."""
    if isinstance(predictor.get("model"), dict):
        change: dict[str, Any] = {}
        if image:
            change["image"] = image
        if storage_uri:
            change["storageUri"] = storage_uri
        return {"model": change}
    containers = copy.deepcopy(predictor.get("containers") or [])
    if not containers:
        raise RolloutError("spec.predictor has neither `model` nor `containers` to change")
    container = containers[_main_container_index(containers)]
    if image:
        container["image"] = image
    if storage_uri:
        env = [e for e in container.get("env") or [] if e.get("name") != STORAGE_URI_ENV]
        container["env"] = [*env, {"name": STORAGE_URI_ENV, "value": storage_uri}]
    # A merge patch replaces lists whole, so the patch carries every container.
    return {"containers": containers}


def start_patch(isvc: dict, percent: int, image: str | None, storage_uri: str | None) -> dict:
    """One merge patch: the new model, the canary percent, tag routing, the spec to go back to.

    The model and `canaryTrafficPercent` must change together: set apart, KServe would first
    send 100% of the traffic to the new revision. `metadata.resourceVersion` makes the API server
    refuse the patch (409) if the object changed since it was read.
    """
    if not image and not storage_uri:
        raise RolloutError("give --image or --storage-uri")
    check_percent(percent)
    if deployment_mode(isvc) != KNATIVE:
        raise RolloutError(f"{name_of(isvc)} is not in Knative mode: its canaries are spec.canary")
    predictor = predictor_of(isvc)
    current = model_of(predictor)
    if (image or current["image"], storage_uri or current["storageUri"]) == (
        current["image"],
        current["storageUri"],
    ):
        # Knative makes no new revision for an unchanged template: nothing to canary.
        raise RolloutError(
            f"{name_of(isvc)} already serves image={current['image']} "
            f"storageUri={current['storageUri']}"
        )
    annotations = {TAG_ROUTING_ANNOTATION: "true"}
    if PREVIOUS_SPEC_ANNOTATION not in annotations_of(isvc):
        # A second `start` during a rollout keeps the spec of the last promoted revision.
        stable = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        annotations[PREVIOUS_SPEC_ANNOTATION] = json.dumps(
            stable, sort_keys=True, separators=(",", ":")
        )
    return {
        "metadata": {
            "resourceVersion": isvc.get("metadata", {}).get("resourceVersion"),
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                **with_model(predictor, image, storage_uri),
                "canaryTrafficPercent": percent,
            }
        },
    }


def check_percent(percent: int) -> None:
    if not 0 <= percent <= 100:
        raise RolloutError(f"percent must be between 0 and 100, not {percent}")


def percent_patch(percent: int) -> dict:
    """Move the canary to another step, the model unchanged."""
    check_percent(percent)
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def promote_patch() -> dict:
    """No canary percent: KServe sends all traffic to the latest revision. The rollout is done."""
    return {
        "metadata": {"annotations": {PREVIOUS_SPEC_ANNOTATION: None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }


def rollback_patches(isvc: dict) -> tuple[dict, list[dict] | None]:
    """First a merge patch that sends no traffic to the canary, then a JSON patch that restores
    the recorded predictor spec (None when no rollout recorded one).

    The JSON patch `test`s the annotation first, so it fails rather than restore a spec that
    someone else changed meanwhile.
    """
    previous = annotations_of(isvc).get(PREVIOUS_SPEC_ANNOTATION)
    if previous is None:
        return percent_patch(0), None
    try:
        spec = json.loads(previous)
    except ValueError as err:
        raise RolloutError(f"annotation {PREVIOUS_SPEC_ANNOTATION} is not JSON: {err}") from err
    path = "/metadata/annotations/" + PREVIOUS_SPEC_ANNOTATION.replace("~", "~0").replace("/", "~1")
    restore = [
        {"op": "test", "path": path, "value": previous},
        {"op": "replace", "path": "/spec/predictor", "value": spec},
        {"op": "remove", "path": path},
    ]
    return percent_patch(0), restore


# --- status ------------------------------------------------------------------------------------


def component_status(isvc: dict) -> dict:
    return (isvc.get("status") or {}).get("components", {}).get("predictor") or {}


def condition(isvc: dict, kind: str = "Ready") -> dict:
    for cond in (isvc.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def is_ready(isvc: dict) -> bool:
    return condition(isvc).get("status") == "True"


def traffic_entry(isvc: dict, *, tag: str | None = None, latest: bool | None = None) -> dict | None:
    for entry in component_status(isvc).get("traffic") or []:
        if tag is not None and entry.get("tag") != tag:
            continue
        if latest is not None and bool(entry.get("latestRevision")) != latest:
            continue
        return entry
    return None


def latest_percent(isvc: dict) -> int:
    """The share of traffic the latest revision gets (0 when it has no route)."""
    entry = traffic_entry(isvc, latest=True)
    return int(entry.get("percent") or 0) if entry else 0


def summary(isvc: dict) -> dict:
    """What `status` shows, as plain JSON."""
    meta = isvc.get("metadata", {})
    status = isvc.get("status") or {}
    component = component_status(isvc)
    predictor = isvc.get("spec", {}).get("predictor") or {}
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "deploymentMode": KNATIVE,
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "ready": is_ready(isvc),
        "url": status.get("url"),
        "model": model_of(predictor),
        "canaryTrafficPercent": predictor.get("canaryTrafficPercent"),
        "rolloutInProgress": PREVIOUS_SPEC_ANNOTATION in annotations_of(isvc),
        "revisions": {
            "latestCreated": component.get("latestCreatedRevision"),
            "latestReady": component.get("latestReadyRevision"),
            "latestRolledout": component.get("latestRolledoutRevision"),
            "previousRolledout": component.get("previousRolledoutRevision"),
        },
        "traffic": [
            {
                "revision": t.get("revisionName"),
                "tag": t.get("tag"),
                "percent": t.get("percent", 0),
                "latest": bool(t.get("latestRevision")),
                "url": t.get("url"),
            }
            for t in component.get("traffic") or []
        ],
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
    }


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_summary(info: dict) -> str:
    """`status -o table`."""
    model = info["model"]
    canary = info["canaryTrafficPercent"]
    lines = [
        f"InferenceService {info['namespace']}/{info['name']}: "
        f"{'Ready' if info['ready'] else 'NOT ready'}  {info['url'] or ''}".rstrip(),
        f"model: image={model['image'] or '-'} storageUri={model['storageUri'] or '-'}",
        f"canaryTrafficPercent: {'-' if canary is None else canary}"
        f"{'  (rollout in progress)' if info['rolloutInProgress'] else ''}",
        "",
    ]
    revisions = info["revisions"]
    rows = [["REVISION", "ROLE", "TAG", "PERCENT", "URL"]]
    traffic = {t["revision"]: t for t in info["traffic"]}
    roles = [
        ("latestCreated", "latest created"),
        ("latestReady", "latest ready"),
        ("latestRolledout", "latest rolled out"),
        ("previousRolledout", "previous rolled out"),
    ]
    seen: dict[str, list[str]] = {}
    for key, role in roles:
        if revisions[key]:
            seen.setdefault(revisions[key], []).append(role)
    for entry in info["traffic"]:
        seen.setdefault(entry["revision"] or "-", [])
    for revision, names in seen.items():
        entry = traffic.get(revision, {})
        rows.append(
            [
                revision,
                ", ".join(names) or "-",
                entry.get("tag") or "-",
                f"{entry.get('percent', 0)}%",
                entry.get("url") or "-",
            ]
        )
    lines += table(rows)
    lines += [
        "",
        *table(
            [["CONDITION", "STATUS", "REASON", "MESSAGE"]]
            + [
                [c["type"] or "-", c["status"] or "-", c["reason"] or "-", c["message"] or "-"]
                for c in info["conditions"]
            ]
        ),
    ]
    return "\n".join(lines)
