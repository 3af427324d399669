"""Every pod spec the chart and the manifests render is one the Terraform-configured Knative
accepts.

Knative's admission webhook refuses any pod-spec field outside its field masks
(knative/serving `pkg/apis/serving/fieldmask.go`, v1.15 to v1.23), and some fields only
pass when a `config-features` flag is on. The tables below are those rules as Knative
documents them; the features come from the KnativeServing resource in
`terraform/03-kserve`. A field set in a render but refused by that Knative fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart_helpers import RENDER_NAMES, kustomize, objects, one, render, render_named
from tests.test_terraform import resources

# PodSpec fields Knative always admits, and those behind a feature flag.
POD_ALWAYS = {
    "serviceAccountName",
    "containers",
    "volumes",
    "imagePullSecrets",
    "enableServiceLinks",
}
POD_FEATURES = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
# Pod securityContext fields once kubernetes.podspec-securitycontext is on.
POD_SECURITY_CONTEXT = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "supplementalGroups",
    "seccompProfile",
}
CONTAINER_FIELDS = {
    "name",
    "args",
    "command",
    "env",
    "envFrom",
    "workingDir",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "ports",
    "resources",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
}
CONTAINER_SECURITY_CONTEXT = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
    "privileged",  # false only
}
# What KServe's PredictorSpec adds around the PodSpec (not sent to Knative as pod fields).
KSERVE_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "model",
    "pytorch",
    "workerSpec",
    "automountServiceAccountToken",  # Knative admits it as false only: checked below
}


def terraform_features() -> dict[str, str]:
    manifest = resources("kubernetes_manifest", "03-kserve")["knative_serving"]["manifest"]
    return dict(manifest["spec"]["config"].get("features", {}))


def refusals(predictor: dict[str, Any], features: dict[str, str]) -> list[str]:
    """What Knative's webhook would refuse in an InferenceService predictor."""
    enabled = {key for key, value in features.items() if str(value).lower() != "disabled"}
    problems = []
    for field in predictor:
        if field in KSERVE_FIELDS or field in POD_ALWAYS:
            continue
        feature = POD_FEATURES.get(field)
        if feature is None:
            problems.append(f"{field}: never allowed by Knative")
        elif feature not in enabled:
            problems.append(f"{field}: needs {feature}")
    if predictor.get("automountServiceAccountToken") not in (None, False):
        problems.append("automountServiceAccountToken: only false is allowed")
    for field in set(predictor.get("securityContext") or {}) - POD_SECURITY_CONTEXT:
        problems.append(f"securityContext.{field}: never allowed by Knative")
    for container in predictor.get("containers", []):
        name = container.get("name", "?")
        for field in set(container) - CONTAINER_FIELDS:
            problems.append(f"container {name}: {field} is not allowed")
        security = container.get("securityContext") or {}
        for field in set(security) - CONTAINER_SECURITY_CONTEXT:
            problems.append(f"container {name}: securityContext.{field} is not allowed")
        if security.get("privileged"):
            problems.append(f"container {name}: privileged is not allowed")
        added = (security.get("capabilities") or {}).get("add")
        if added and features.get("kubernetes.containerspec-addcapabilities") != "enabled":
            problems.append(f"container {name}: capabilities.add needs addcapabilities")
    return problems


def knative_predictors() -> dict[str, dict]:
    """The predictor of every Knative-mode render: chart values files and overlays."""
    found = {}
    for name in RENDER_NAMES:
        isvc = one(objects(render_named(name)), "InferenceService")
        found[f"chart:{name}"] = isvc
    for overlay in ("base", "overlays/canary", "overlays/gpu", "overlays/grpc"):
        found[f"manifests/{overlay}"] = one(list(kustomize(overlay)), "InferenceService")
    return {
        name: isvc["spec"]["predictor"]
        for name, isvc in found.items()
        if isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        in ("Knative", "Serverless")
    }


PREDICTORS = knative_predictors()


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_the_terraform_configured_knative_accepts_every_render(name):
    assert refusals(PREDICTORS[name], terraform_features()) == []


@pytest.mark.parametrize(
    "feature", ["kubernetes.podspec-securitycontext", "kubernetes.podspec-nodeselector"]
)
def test_removing_a_needed_feature_is_caught(feature):
    features = {k: v for k, v in terraform_features().items() if k != feature}
    refused = [problem for p in PREDICTORS.values() for problem in refusals(p, features)]
    assert any(feature in problem for problem in refused)


def test_knative_refuses_the_termination_grace_period():
    """Knative sets the pod's grace period from the revision timeout and refuses the field:
    the chart sets it only in Standard mode."""
    knative = one(objects(render({"terminationGracePeriodSeconds": 45})), "InferenceService")
    assert refusals(knative["spec"]["predictor"], terraform_features()) == []
    predictor = {**knative["spec"]["predictor"], "terminationGracePeriodSeconds": 45}
    assert refusals(predictor, terraform_features()) == [
        "terminationGracePeriodSeconds: never allowed by Knative"
    ]
    standard = one(objects(render({"deploymentMode": "Standard"})), "InferenceService")
    assert standard["spec"]["predictor"]["terminationGracePeriodSeconds"] == 30


def test_secure_pod_defaults_are_on():
    assert terraform_features().get("secure-pod-defaults") == "enabled"
