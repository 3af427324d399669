"""The Helm chart, rendered and linted by Helm 4's own engine (helm-python-sdk), offline."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.chart_helpers import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    RENDER_NAMES,
    ci_values_files,
    core_validation_errors,
    objects,
    one,
    reference_schema_errors,
    render,
    render_named,
    values_of,
)
from tests.isvc_schema import validate_isvc

RENDERS = list(RENDER_NAMES)
FULLNAME = f"{RELEASE}-torch-predictor"


def isvc_of(name: str) -> dict:
    return one(objects(render_named(name)), "InferenceService")


def container_of(isvc: dict) -> dict:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return container


def test_ci_values_cover_the_required_scenarios():
    assert {"canary", "gpu", "grpc", "scale-to-zero"} <= set(ci_values_files())


@pytest.mark.parametrize("name", RENDERS)
def test_lint_strict_is_clean(name):
    report = helm.lint(CHART_DIR, values_of(name), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


def test_lint_strict_reports_a_broken_chart(tmp_path):
    # The lint check above can fail: a chart with an unknown value type is reported.
    broken = helm.Chart.load(CHART_DIR).save_dir(tmp_path)
    report = helm.lint(broken, {"canary": {"trafficPercent": "ten"}}, strict=True)
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"])


@pytest.mark.parametrize("name", RENDERS)
def test_rendered_objects_pass_the_schemas(name):
    docs = objects(render_named(name))
    assert {d["kind"] for d in docs} == {
        "InferenceService",
        "ServiceAccount",
        "Pod",
        "NetworkPolicy",
    }
    for doc in docs:
        if doc["kind"] == "InferenceService":
            assert validate_isvc(doc) == []
        else:
            assert core_validation_errors(doc) is None


@pytest.mark.parametrize("name", RENDERS)
def test_rendered_isvc_passes_the_reference_crd_schema(name):
    assert reference_schema_errors(isvc_of(name)) == []


def test_default_isvc_runs_the_image_hardened():
    isvc = isvc_of("default")
    predictor = isvc["spec"]["predictor"]
    container = container_of(isvc)
    annotations = isvc["metadata"]["annotations"]

    assert isvc["metadata"]["name"] == FULLNAME
    assert isvc["metadata"]["namespace"] == NAMESPACE
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    assert annotations["serving.kserve.io/enable-tag-routing"] == "true"
    assert "canaryTrafficPercent" not in predictor

    assert container["name"] == "kserve-container"
    app_version = helm.Chart.load(CHART_DIR).metadata["appVersion"]
    assert container["image"].endswith(f"/torch-predictor:{app_version}")
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert "--model_name=model" in container["args"]
    assert not any(e["name"] == "STORAGE_URI" for e in container["env"])  # baked-in model

    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}

    assert "terminationGracePeriodSeconds" not in predictor  # Knative refuses it
    grace = predictor["timeout"]  # Knative gives the pod the revision timeout instead
    drain = grace // 5
    assert f"--drain_seconds={drain}" in container["args"]
    assert f"--grace_period={(grace - drain) // 2}" in container["args"]
    assert predictor["minReplicas"] == 1
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["timeout"] == 60

    pod_security = predictor["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 1000
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # The read-only root needs a writable /tmp, and HOME there.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in predictor["volumes"])
    assert {"name": "HOME", "value": "/tmp"} in container["env"]

    account = one(objects(render_named("default")), "ServiceAccount")
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False


def test_canary_render_splits_traffic_with_tag_routing():
    isvc = isvc_of("canary")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert container_of(isvc)["image"].endswith(":0.2.0")


def test_promote_drops_the_split_and_rollback_pins_zero():
    canary = values_of("canary")
    promoted = {**canary, "canary": {"enabled": False, "trafficPercent": 10}}
    rolled_back = {**canary, "canary": {"enabled": True, "trafficPercent": 0}}
    promoted_isvc = one(objects(render(promoted)), "InferenceService")
    rolled_back_isvc = one(objects(render(rolled_back)), "InferenceService")
    assert "canaryTrafficPercent" not in promoted_isvc["spec"]["predictor"]
    assert rolled_back_isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_gpu_render_requests_a_gpu_and_batches():
    isvc = isvc_of("gpu")
    predictor = isvc["spec"]["predictor"]
    container = container_of(isvc)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["memory"] == "32Gi"
    assert "--device=cuda" in container["args"]
    assert "--max_batch_size=32" in container["args"]
    assert "--max_batch_delay_ms=10" in container["args"]
    assert predictor["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "STORAGE_URI", "value": "gs://example-models/resnet50"} in container["env"]

    account = one(objects(render_named("gpu")), "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "predictor@example-project.iam.gserviceaccount.com"
    }


def test_grpc_render_exposes_h2c_and_tests_over_grpc():
    container = container_of(isvc_of("grpc"))
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    # Health stays on the REST port, which serves /v2/health/* in every mode.
    assert container["readinessProbe"]["httpGet"]["port"] == 8080
    script = one(objects(render_named("grpc")), "Pod")["spec"]["containers"][0]["args"][0]
    assert "--http2-prior-knowledge" in script
    assert "inference.GRPCInferenceService/$1" in script
    assert "ModelReady" in script


def test_scale_to_zero_render():
    predictor = isvc_of("scale-to-zero")["spec"]["predictor"]
    assert predictor["minReplicas"] == 0
    assert predictor["maxReplicas"] == 5
    assert predictor["scaleMetric"] == "rps"
    assert predictor["scaleTarget"] == 20
    assert predictor["containerConcurrency"] == 8
    assert predictor["logger"] == {
        "mode": "all",
        "url": "http://message-dumper.default.svc.cluster.local",
    }


def test_helm_test_hook_predicts_through_the_predictor_service():
    docs = objects(render_named("default"))
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    url = f"http://{FULLNAME}-predictor.{NAMESPACE}.svc.cluster.local"
    assert f"URL={url}" in script
    assert "/v2/health/ready" in script
    assert '"$URL/v1/models/model:predict"' in script
    assert '"instances":[1,2]' in script
    assert "[ \"$got\" = '[2,4]' ]" in script
    # Small, digest-pinned and hardened.
    assert container["image"].startswith("curlimages/curl:") and "@sha256:" in container["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["automountServiceAccountToken"] is False
    policy = one(docs, "NetworkPolicy", "test")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_helm_test_hook_v2_prediction():
    pod = one(objects(render({"protocol": "v2"})), "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    assert '"$URL/v2/models/model/infer"' in script
    assert '"name":"input-0","shape":[2],"datatype":"FP32","data":[1,2]' in script


def test_notes_tell_how_to_reach_the_model():
    notes = render_named("default")["torch-predictor/templates/NOTES.txt"]
    assert f"kubectl get inferenceservice {FULLNAME} -n {NAMESPACE}" in notes
    assert "jsonpath='{.status.url}'" in notes
    assert 'curl -H "Host: ${SERVICE_HOSTNAME}"' in notes
    # HTTPS through the gateway: the CA to trust, and SNI and Host for the service's name.
    assert '--cacert ca.crt --resolve "${SERVICE_HOSTNAME}:443:${INGRESS_HOST}"' in notes
    assert '"https://${SERVICE_HOSTNAME}/v1/models/model:predict"' in notes
    assert "/v1/models/model:predict" in notes
    assert "/v2/models/model/infer" in notes
    assert f"helm test {RELEASE}" in notes

    canary_notes = render_named("canary")["torch-predictor/templates/NOTES.txt"]
    assert "latest revision gets 10%" in canary_notes
    assert "canary.enabled=false" in canary_notes and "canary.trafficPercent=0" in canary_notes
    grpc_notes = render_named("grpc")["torch-predictor/templates/NOTES.txt"]
    assert 'grpcurl -cacert ca.crt -authority "${SERVICE_HOSTNAME}"' in grpc_notes
    assert '"${INGRESS_HOST}:443"' in grpc_notes


BAD_VALUES = [
    pytest.param(
        {"canary": {"enabled": True, "trafficPercent": 150}},
        ["/canary/trafficPercent", "maximum: got 150, want 100"],
        id="traffic-percent-150",
    ),
    pytest.param(
        {"autoscaling": {"minReplicas": -1}},
        ["/autoscaling/minReplicas", "minimum: got -1, want 0"],
        id="replicas-negative",
    ),
    pytest.param(
        {"protocol": "v3"},
        ["/protocol", "value must be one of 'v1', 'v2'"],
        id="unknown-protocol",
    ),
    pytest.param(
        {"transport": "websocket"},
        ["/transport", "value must be one of 'rest', 'grpc'"],
        id="unknown-transport",
    ),
    pytest.param(
        {"deploymentMode": "Serverful"},
        ["/deploymentMode", "value must be one of"],
        id="unknown-deployment-mode",
    ),
    pytest.param(
        {"gpu": {"enabled": True, "count": 0}},
        ["/gpu/count", "minimum: got 0, want 1"],
        id="zero-gpus",
    ),
    pytest.param({"replicaCount": 2}, ["replicaCount"], id="unknown-key"),
    pytest.param(
        {"deploymentMode": "Standard", "canary": {"enabled": True, "trafficPercent": 10}},
        ["needs deploymentMode Knative", "Standard mode ignores canaryTrafficPercent"],
        id="canary-in-standard-mode",
    ),
    pytest.param(
        {"deploymentMode": "RawDeployment", "autoscaling": {"minReplicas": 0}},
        ["scale-to-zero", "needs deploymentMode Knative"],
        id="scale-to-zero-in-raw-mode",
    ),
    pytest.param(
        {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}},
        ["autoscaling.maxReplicas (2) must be 0 or at least autoscaling.minReplicas (4)"],
        id="max-below-min",
    ),
    pytest.param(
        {"logger": {"enabled": True, "url": ""}},
        ["logger.enabled=true needs logger.url"],
        id="logger-without-url",
    ),
]


@pytest.mark.parametrize(("values", "messages"), BAD_VALUES)
def test_bad_values_are_rejected_with_a_clear_message(values, messages):
    with pytest.raises(helm.HelmError) as raised:
        render(values)
    for message in messages:
        assert message in str(raised.value)


def test_canary_in_knative_and_serverless_modes_is_accepted():
    for mode in ("Knative", "Serverless"):
        values = {"deploymentMode": mode, "canary": {"enabled": True, "trafficPercent": 25}}
        isvc = one(objects(render(values)), "InferenceService")
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 25


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
@pytest.mark.parametrize("grace", [10, 30, 120])
def test_drain_and_grace_fit_the_pods_termination_grace(mode, grace):
    """SIGTERM: --drain_seconds, then up to --grace_period for HTTP and again for gRPC,
    within the pod's grace: the revision timeout in Knative mode, else its own field."""
    values = {"deploymentMode": mode, "timeout": grace, "terminationGracePeriodSeconds": grace}
    if mode == "Knative":
        values["terminationGracePeriodSeconds"] = 3 * grace  # not the pod's: ignored
    isvc = one(objects(render(values)), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert ("terminationGracePeriodSeconds" in predictor) == (mode == "Standard")
    args = container_of(isvc)["args"]
    drain = int(next(a for a in args if a.startswith("--drain_seconds=")).split("=")[1])
    finish = int(next(a for a in args if a.startswith("--grace_period=")).split("=")[1])
    assert drain >= 1 and finish >= 1
    assert drain + 2 * finish <= grace


def test_a_handler_value_becomes_the_handler_option():
    isvc = one(
        objects(render({"model": {"handler": "image_handler:Thumbnails"}})), "InferenceService"
    )
    assert "--handler=image_handler:Thumbnails" in container_of(isvc)["args"]
    assert not any(a.startswith("--handler") for a in container_of(isvc_of("default"))["args"])
    with pytest.raises(helm.HelmError) as raised:
        render({"model": {"handler": "not a class"}})
    assert "handler" in str(raised.value)
