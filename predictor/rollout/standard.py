"""Canaries in KServe's Standard (RawDeployment) mode: the `spec.canary` list.

KServe 0.20+ gives each entry `{trafficPercent, predictor: {name, ...}}` a Deployment and a
Service of its own, `{isvc}-{name}-predictor`, built from the stable `spec.predictor` with the
entry's fields laid over it (lists such as `containers` replaced whole). The Gateway API
HTTPRoute weights the stable Service and each ready canary's by their percents. Promotion makes
the canary's predictor spec (its name included) the stable one and removes the entry: its
Deployment is then the stable Deployment, so no pod restarts. Rollback removes the entry.
Status: `status.canaryStatuses[]` ({name, ready, trafficPercent}) and the condition
`CanaryPredictorReady`.

Like isvc.py, everything here is a pure function of the object as the API server returns it.
Patches that touch one entry are JSON patches that `test` the entry's name first, so they fail
(422) rather than change another entry when the list changed meanwhile.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from predictor.rollout import isvc as spec

CANARY_CONDITION = "CanaryPredictorReady"
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Fields KServe's webhook refuses on a canary: its replicas are fixed.
AUTOSCALING_FIELDS = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")
MAX_SERVICE_NAME = 63  # a Service name is a DNS label


def service_name(isvc_name: str, predictor_name: str | None = None) -> str:
    """The Deployment and Service KServe names after a predictor (KServe's
    PredictorServiceName)."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def canaries_of(isvc: dict) -> list[dict]:
    return list((isvc.get("spec") or {}).get("canary") or [])


def canary_names(isvc: dict) -> list[str]:
    return [(c.get("predictor") or {}).get("name") or "" for c in canaries_of(isvc)]


def _index_of(isvc: dict, name: str) -> int:
    names = canary_names(isvc)
    if name not in names:
        known = ", ".join(names) or "none"
        raise spec.RolloutError(f"{spec.name_of(isvc)} has no canary {name!r} (canaries: {known})")
    return names.index(name)


def pick_canary(isvc: dict, name: str | None) -> str:
    """The canary a command means: the one named, else the only one there is."""
    names = canary_names(isvc)
    if name:
        _index_of(isvc, name)
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise spec.RolloutError(f"no canary on {spec.name_of(isvc)}: nothing to do")
    raise spec.RolloutError(
        f"{spec.name_of(isvc)} has {len(names)} canaries ({', '.join(names)}): "
        "say which with --canary-name"
    )


def default_canary_name(isvc: dict, image: str | None, storage_uri: str | None) -> str:
    """A name from what the canary serves: the image's tag (or digest), else the last part of
    the storage URI; made a DNS label short enough for `{isvc}-{name}-predictor`."""
    if image and "@" in image:
        raw = "sha-" + image.rsplit(":", 1)[-1][:12]
    elif image and ":" in image.rsplit("/", 1)[-1]:
        raw = image.rsplit(":", 1)[-1]
    else:
        raw = (storage_uri or image or "canary").rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"v{name}" if name else "canary"
    room = MAX_SERVICE_NAME - len(service_name(isvc["metadata"]["name"], "x")) + 1
    return name[: max(room, 1)].rstrip("-") or "canary"


def check_name(isvc: dict, name: str) -> None:
    """What KServe's webhook would refuse about a new canary's name, said before sending."""
    if not NAME_PATTERN.match(name):
        raise spec.RolloutError(
            f"canary name {name!r} must be a DNS label: lower-case letters, digits and '-', "
            "starting with a letter (give another with --canary-name)"
        )
    isvc_name = isvc["metadata"]["name"]
    if len(service_name(isvc_name, name)) > MAX_SERVICE_NAME:
        raise spec.RolloutError(
            f"canary name {name!r} makes the Service name {service_name(isvc_name, name)!r} "
            f"longer than {MAX_SERVICE_NAME} characters"
        )
    if name in canary_names(isvc):
        raise spec.RolloutError(
            f"{spec.name_of(isvc)} already has a canary {name!r}: `promote` or `rollback` it, "
            "or give another --canary-name"
        )
    if name == spec.predictor_of(isvc).get("name"):
        raise spec.RolloutError(
            f"canary name {name!r} is the stable predictor's name: give another --canary-name"
        )


def merged(stable: dict, canary: dict) -> dict:
    """The canary's predictor as KServe builds it: the stable spec with the canary's fields
    laid over it, objects merged key by key, anything else (lists included) replaced."""
    result = copy.deepcopy(stable)
    for key, value in canary.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def start_patch(
    isvc: dict, name: str, percent: int, image: str | None, storage_uri: str | None
) -> dict:
    """A merge patch adding the canary entry. The whole list is sent (a merge patch replaces
    lists), guarded by `metadata.resourceVersion`: a list changed meanwhile gets a 409."""
    if not image and not storage_uri:
        raise spec.RolloutError("give --image or --storage-uri")
    spec.check_percent(percent)
    check_name(isvc, name)
    stable = spec.predictor_of(isvc)
    current = spec.model_of(stable)
    if (image or current["image"], storage_uri or current["storageUri"]) == (
        current["image"],
        current["storageUri"],
    ):
        raise spec.RolloutError(
            f"{spec.name_of(isvc)} already serves image={current['image']} "
            f"storageUri={current['storageUri']}"
        )
    taken = sum(int(c.get("trafficPercent") or 0) for c in canaries_of(isvc))
    if taken + percent > 100:
        raise spec.RolloutError(
            f"the canaries would get {taken + percent}% of the traffic: KServe allows at most "
            f"100% in all (the others have {taken}%)"
        )
    predictor = {"name": name, **spec.with_model(stable, image, storage_uri)}
    entry = {"trafficPercent": percent, "predictor": predictor}
    return {
        "metadata": {"resourceVersion": isvc.get("metadata", {}).get("resourceVersion")},
        "spec": {"canary": [*canaries_of(isvc), entry]},
    }


def _name_test(index: int, name: str) -> dict:
    return {"op": "test", "path": f"/spec/canary/{index}/predictor/name", "value": name}


def percent_patch(isvc: dict, name: str, percent: int) -> list[dict]:
    """A JSON patch moving one canary to another percent."""
    spec.check_percent(percent)
    index = _index_of(isvc, name)
    others = sum(
        int(c.get("trafficPercent") or 0) for i, c in enumerate(canaries_of(isvc)) if i != index
    )
    if others + percent > 100:
        raise spec.RolloutError(
            f"canary {name!r} at {percent}% would give the canaries {others + percent}% of the "
            "traffic: KServe allows at most 100% in all"
        )
    return [
        _name_test(index, name),
        {"op": "replace", "path": f"/spec/canary/{index}/trafficPercent", "value": percent},
    ]


def _removal(isvc: dict, indexes: list[int]) -> list[dict]:
    """Operations removing these entries (the list itself when none would be left)."""
    if len(indexes) == len(canaries_of(isvc)):
        return [{"op": "remove", "path": "/spec/canary"}]
    return [{"op": "remove", "path": f"/spec/canary/{i}"} for i in sorted(indexes, reverse=True)]


def promote_patch(isvc: dict, name: str) -> list[dict]:
    """One JSON patch: the canary's predictor (its name included) becomes spec.predictor, and
    the entry goes. The stable spec keeps its own replicas and autoscaling."""
    index = _index_of(isvc, name)
    stable = spec.predictor_of(isvc)
    canary = dict(canaries_of(isvc)[index].get("predictor") or {})
    canary.pop("minReplicas", None)  # the canary's fixed replicas, not the stable's scaling
    return [
        _name_test(index, name),
        {"op": "replace", "path": "/spec/predictor", "value": merged(stable, canary)},
        *_removal(isvc, [index]),
    ]


def rollback_patch(isvc: dict, name: str | None) -> list[dict]:
    """A JSON patch removing one canary (or, with no name, every canary)."""
    names = canary_names(isvc)
    indexes = [_index_of(isvc, name)] if name else list(range(len(names)))
    return [*(_name_test(i, names[i]) for i in indexes), *_removal(isvc, indexes)]


# --- status ------------------------------------------------------------------------------------


def canary_status(isvc: dict, name: str) -> dict | None:
    for entry in (isvc.get("status") or {}).get("canaryStatuses") or []:
        if entry.get("name") == name:
            return entry
    return None


def variants(isvc: dict) -> list[dict[str, Any]]:
    """The stable predictor and each canary: name, role, percents, readiness, Service, model.

    The stable's share is what the HTTPRoute gives it: 100 less the ready canaries' percents
    (KServe leaves canaries that are not ready out of the route)."""
    isvc_name = isvc["metadata"]["name"]
    stable = spec.predictor_of(isvc)
    rows: list[dict[str, Any]] = []
    ready_share = taken = 0
    for entry in canaries_of(isvc):
        predictor = entry.get("predictor") or {}
        name = predictor.get("name") or ""
        status = canary_status(isvc, name) or {}
        ready = bool(status.get("ready"))
        percent = int(entry.get("trafficPercent") or 0)
        ready_share += percent if ready else 0
        taken += percent
        rows.append(
            {
                "name": name,
                "role": "canary",
                "trafficPercent": percent,
                "servedPercent": percent if ready else 0,
                "ready": ready,
                "service": service_name(isvc_name, name),
                "model": spec.model_of(merged(stable, predictor)),
            }
        )
    stable_row = {
        "name": stable.get("name") or "",
        "role": "stable",
        "trafficPercent": 100 - taken,
        "servedPercent": 100 - ready_share,
        "ready": spec.condition(isvc, "PredictorReady").get("status") == "True",
        "service": service_name(isvc_name, stable.get("name")),
        "model": spec.model_of(stable),
    }
    return [stable_row, *rows]


def describe(obj: dict) -> str:
    """One line on the state of a Standard-mode object, for progress and timeout messages."""
    status = obj.get("status") or {}
    parts = []
    for row in variants(obj):
        state = "ready" if row["ready"] else "NOT ready"
        parts.append(f"{row['role']} {row['name'] or '-'} {row['servedPercent']}% {state}")
    canary = spec.condition(obj, CANARY_CONDITION)
    text = (
        f"generation {obj.get('metadata', {}).get('generation')} "
        f"(observed {status.get('observedGeneration')}), [{', '.join(parts)}], "
        f"Ready={spec.condition(obj).get('status', 'Unknown')}"
    )
    if canary:
        text += f", {CANARY_CONDITION}={canary.get('status')}"
        if canary.get("status") != "True" and (canary.get("reason") or canary.get("message")):
            text += f" ({canary.get('reason') or ''}: {canary.get('message') or ''})"
    return text


def summary(isvc: dict) -> dict:
    """What `status` shows in Standard mode, as plain JSON."""
    meta = isvc.get("metadata", {})
    status = isvc.get("status") or {}
    stable, *canaries = variants(isvc)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "deploymentMode": spec.STANDARD,
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "ready": spec.is_ready(isvc),
        "url": status.get("url"),
        "model": stable["model"],
        "stable": stable,
        "canaries": canaries,
        "rolloutInProgress": bool(canaries),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
    }


def format_summary(info: dict) -> str:
    """`status -o table` in Standard mode: one row per variant."""
    model = info["model"]
    lines = [
        f"InferenceService {info['namespace']}/{info['name']} (Standard mode): "
        f"{'Ready' if info['ready'] else 'NOT ready'}  {info['url'] or ''}".rstrip(),
        f"model: image={model['image'] or '-'} storageUri={model['storageUri'] or '-'}",
        "",
    ]
    rows = [["VARIANT", "ROLE", "PERCENT", "SERVED", "READY", "SERVICE", "MODEL"]]
    for row in [info["stable"], *info["canaries"]]:
        served = row["model"]["storageUri"] or row["model"]["image"] or "-"
        rows.append(
            [
                row["name"] or "-",
                row["role"],
                f"{row['trafficPercent']}%",
                f"{row['servedPercent']}%",
                "yes" if row["ready"] else "no",
                row["service"],
                served,
            ]
        )
    lines += spec.table(rows)
    conditions = [["CONDITION", "STATUS", "REASON", "MESSAGE"]] + [
        [c["type"] or "-", c["status"] or "-", c["reason"] or "-", c["message"] or "-"]
        for c in info["conditions"]
    ]
    return "\n".join([*lines, "", *spec.table(conditions)])
