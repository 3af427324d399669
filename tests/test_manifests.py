"""kustomize manifests, the strict InferenceService schema, and checkov over every render."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest

from tests.chart_helpers import (
    MANIFESTS_DIR,
    OVERLAYS,
    RENDER_NAMES,
    checkov_binary,
    core_validation_errors,
    kubectl,
    kustomize,
    objects,
    one,
    reference_schema_errors,
    render,
    render_named,
)
from tests.isvc_schema import assert_valid_isvc, isvc_schema, validate_isvc


def isvc_of(overlay: str) -> dict:
    return one(list(kustomize(overlay)), "InferenceService")


def container_of(isvc: dict) -> dict:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_pass_the_schemas(overlay):
    docs = kustomize(overlay)
    assert sorted(d["kind"] for d in docs) == [
        "InferenceService",
        "Namespace",
        "NetworkPolicy",
        "ServiceAccount",
    ]
    for doc in docs:
        if doc["kind"] == "InferenceService":
            assert validate_isvc(doc) == []
        else:
            assert core_validation_errors(doc) is None
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "models"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_isvc_passes_the_reference_crd_schema(overlay):
    assert reference_schema_errors(isvc_of(overlay)) == []


def test_base_is_hardened_knative_with_tag_routing():
    isvc = isvc_of("base")
    predictor = isvc["spec"]["predictor"]
    container = container_of(isvc)
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Knative",
        "serving.kserve.io/enable-tag-routing": "true",
    }
    assert "canaryTrafficPercent" not in predictor
    assert container["name"] == "kserve-container"
    assert container["image"] == "ghcr.io/torch-kserve/torch-predictor:0.1.0"
    assert container["ports"][0]["name"] == "http1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert predictor["serviceAccountName"] == "torch-predictor"


def test_canary_overlay_sends_ten_percent_to_a_new_image():
    isvc = isvc_of("overlays/canary")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert container_of(isvc)["image"].endswith(":0.2.0")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"


def test_gpu_overlay_requests_a_gpu():
    isvc = isvc_of("overlays/gpu")
    container = container_of(isvc)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--device=cuda" in container["args"] and "--device=cpu" not in container["args"]
    assert "--max_batch_size=32" in container["args"]
    assert isvc["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_grpc_overlay_routes_h2c_to_8081():
    container = container_of(isvc_of("overlays/grpc"))
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_standard_canary_overlay_runs_a_canary_beside_a_named_stable_predictor():
    isvc = isvc_of("overlays/standard-canary")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}
    assert predictor["name"] == "stable"
    assert "canaryTrafficPercent" not in predictor
    # Standard mode: the HPA's metric, and the pod's own grace period the drain args fit.
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 80)
    grace = predictor["terminationGracePeriodSeconds"]
    stable = container_of(isvc)
    assert f"--drain_seconds={grace // 5}" in stable["args"]
    assert f"--grace_period={(grace - grace // 5) // 2}" in stable["args"]
    assert _env(stable)["STORAGE_URI"] == "gs://my-bucket/my-model"  # KServe requires one
    assert stable["image"] == "ghcr.io/torch-kserve/torch-predictor:0.1.0"

    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 10
    assert set(entry["predictor"]) == {"name", "containers"}
    assert entry["predictor"]["name"] == "canary"
    (canary,) = entry["predictor"]["containers"]
    assert canary["image"] == "ghcr.io/torch-kserve/torch-predictor:0.2.0"
    assert _env(canary)["STORAGE_URI"] == "gs://my-bucket/my-model-v2"

    # KServe replaces the container list whole: the canary's is the stable one but for its
    # image and model, so a change to the base must reach both.
    def rest(container: dict) -> dict:
        return {
            **{k: v for k, v in container.items() if k != "image"},
            "env": [e for e in container["env"] if e["name"] != "STORAGE_URI"],
        }

    assert rest(canary) == rest(stable)


def _overlay_patch_commands(overlay: str) -> dict[str, list]:
    """The `kubectl ... patch isvc ... --type json -p '[...]'` commands of an overlay's comment
    header, as {'promote' or 'rollback': the JSON patch}."""
    lines = (MANIFESTS_DIR / overlay / "kustomization.yaml").read_text().splitlines()
    header = "\n".join(line.lstrip("#") for line in lines if line.startswith("#"))
    found = {}
    for patch in re.findall(r"patch isvc torch-predictor --type json -p '(\[.*?\])'", header, re.S):
        operations = json.loads(patch)
        kind = "promote" if any(op["op"] == "copy" for op in operations) else "rollback"
        found[kind] = operations
    return found


def _kubectl_patch_local(obj: dict, operations: list, tmp_path) -> dict:
    source = tmp_path / "isvc.json"
    source.write_text(json.dumps(obj))
    result = subprocess.run(
        [kubectl(), "patch", "--local", "-f", str(source), "--type", "json"]
        + ["-p", json.dumps(operations), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_standard_canary_overlay_promote_and_rollback_commands_do_what_they_say(tmp_path):
    """The overlay's header commands, applied by kubectl to its own render: promotion makes the
    canary's name and containers the stable predictor's (what KServe needs to keep the
    canary's Deployment), rollback drops the canary and leaves the stable predictor as it is."""
    isvc = isvc_of("overlays/standard-canary")
    commands = _overlay_patch_commands("overlays/standard-canary")
    assert set(commands) == {"promote", "rollback"}

    promoted = _kubectl_patch_local(isvc, commands["promote"], tmp_path)
    (entry,) = isvc["spec"]["canary"]
    assert "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"] == {**isvc["spec"]["predictor"], **entry["predictor"]}
    assert validate_isvc(promoted) == []

    rolled_back = _kubectl_patch_local(isvc, commands["rollback"], tmp_path)
    assert rolled_back["spec"] == {"predictor": isvc["spec"]["predictor"]}

    # The promotion tests the canary's name first: it refuses to promote another one.
    renamed = copy.deepcopy(isvc)
    renamed["spec"]["canary"][0]["predictor"]["name"] = "other"
    source = tmp_path / "renamed.json"
    source.write_text(json.dumps(renamed))
    result = subprocess.run(
        [kubectl(), "patch", "--local", "-f", str(source), "--type", "json"]
        + ["-p", json.dumps(commands["promote"]), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_standard_canary_overlay_ships_the_charts_standard_mode_policy():
    """The chart's Standard-mode policy, without the helm test pod the overlay does not have."""
    values = {"fullnameOverride": "torch-predictor", "deploymentMode": "Standard"}
    chart = one(objects(render(values)), "NetworkPolicy", "predictor")
    expected = copy.deepcopy(chart["spec"])
    for rule in expected["ingress"]:  # the helm test pod: a pod of the release's namespace
        rule["from"] = [
            p for p in rule["from"] if "podSelector" not in p or "namespaceSelector" in p
        ]
    overlay = one(list(kustomize("overlays/standard-canary")), "NetworkPolicy")
    assert overlay["spec"] == expected


# --- the strict InferenceService schema itself -------------------------------------------


def test_schema_is_built_from_the_kserve_models():
    definitions = isvc_schema()["$defs"]
    predictor = definitions["V1beta1PredictorSpec"]
    assert predictor["additionalProperties"] is False
    assert predictor["properties"]["canaryTrafficPercent"] == {"type": "integer"}
    assert predictor["properties"]["containers"]["items"] == {"$ref": "#/$defs/V1Container"}
    assert "readinessProbe" in definitions["V1Container"]["properties"]


def test_schema_rejects_a_misspelt_field_and_accepts_the_real_render():
    isvc = one(objects(render_named("default")), "InferenceService")
    assert_valid_isvc(isvc)

    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["contianers"] = typo["spec"]["predictor"].pop("containers")
    errors = validate_isvc(typo)
    assert errors == [
        "$.spec.predictor: Additional properties are not allowed ('contianers' was unexpected)"
    ]
    with pytest.raises(AssertionError, match="contianers"):
        assert_valid_isvc(typo)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "predictor", "minReplicas"), "one", "'one' is not of type 'integer'"),
        (("spec", "predictor", "canaryTrafficPercent"), "10%", "is not of type 'integer'"),
        (("spec", "predictor", "containers", 0, "imagePullPolice"), "Always", "imagePullPolice"),
        (("spec", "predictor", "containers", 0, "ports", 0, "containerPort"), "80", "integer"),
        (("metadata", "annotation"), {}, "'annotation' was unexpected"),
        (("spec", "predicter"), {}, "'predicter' was unexpected"),
    ],
)
def test_schema_rejects_wrong_fields_and_types(path, value, expected):
    isvc = copy.deepcopy(one(objects(render_named("default")), "InferenceService"))
    target = isvc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = validate_isvc(isvc)
    assert len(errors) == 1 and expected in errors[0]


def test_schema_takes_quantities_and_int_or_string_like_the_api_server():
    isvc = copy.deepcopy(one(objects(render_named("gpu")), "InferenceService"))
    container = container_of(isvc)
    container["resources"]["limits"]["nvidia.com/gpu"] = 1
    container["readinessProbe"]["httpGet"]["port"] = "http1"
    assert validate_isvc(isvc) == []
    assert validate_isvc({"apiVersion": "v1", "kind": "Pod"}) != []


# --- checkov over every render and every overlay, once ------------------------------------


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory):
    binary = checkov_binary()
    if binary is None:
        pytest.skip("checkov not installed: set $CHECKOV or create .venv-checkov (make test)")
    directory = tmp_path_factory.mktemp("renders")
    for name in RENDER_NAMES:
        docs = [t for p, t in render_named(name).items() if p.endswith(".yaml")]
        (directory / f"chart-{name}.yaml").write_text("\n---\n".join(docs))
    for overlay in OVERLAYS:
        out = directory / f"kustomize-{overlay.replace('/', '-')}.yaml"
        out.write_text("\n---\n".join(json.dumps(doc) for doc in kustomize(overlay)))
    result = subprocess.run(
        [binary, "-d", str(directory), "--framework", "kubernetes", "--compact", "-o", "json"]
        + ["--skip-download"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_reports_no_failed_checks(checkov_report):
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert failed == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100  # it really looked at the pods


def test_every_checkov_skip_is_annotated_with_its_reason(checkov_report):
    skipped = checkov_report["results"]["skipped_checks"]
    assert skipped, "expected the documented probe skips on the helm test pod"
    for check in skipped:
        assert check["check_id"] in {"CKV_K8S_8", "CKV_K8S_9"}
        assert check["resource"].startswith("Pod.")
        assert "one-shot test client" in check["check_result"]["suppress_comment"]
