"""The Helm chart, rendered and linted by Helm 4's own engine (helm-python-sdk), offline."""

from __future__ import annotations

import copy
import json
import shlex

import helm_python as helm
import pytest

from tests.chart_helpers import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    RENDER_NAMES,
    canary_predictors,
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
    assert {
        "canary",
        "gpu",
        "grpc",
        "scale-to-zero",
        "standard-canary",
        "standard-abn",
    } <= set(ci_values_files())


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
        [
            "canary.enabled=true in Standard mode needs model.storageUri",
            "KServe's webhook refuses",
            '"canary requires a stable predictor with a model',
        ],
        id="standard-canary-without-a-model",
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


# --- Standard (RawDeployment) mode canaries: spec.canary ------------------------------------

NOTES = "torch-predictor/templates/NOTES.txt"
STANDARD = {"deploymentMode": "Standard", "model": {"storageUri": "gs://models/doubler/v1"}}


def standard(**values) -> dict:
    """Values in Standard mode with a model from storage (KServe's webhook wants one)."""
    return {**STANDARD, **values}


def isvc_for(values: dict) -> dict:
    return one(objects(render(values)), "InferenceService")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container["env"]}


def canary_containers(isvc: dict) -> dict[str, dict]:
    found = {}
    for entry in isvc["spec"]["canary"]:
        (container,) = entry["predictor"]["containers"]
        found[entry["predictor"]["name"]] = container
    return found


def test_standard_canary_render_adds_one_spec_canary_entry():
    isvc = isvc_of("standard-canary")
    spec = isvc["spec"]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}
    assert spec["predictor"]["name"] == "stable"
    assert "canaryTrafficPercent" not in spec["predictor"]
    (entry,) = spec["canary"]
    assert entry["trafficPercent"] == 10
    # Only what differs from the stable predictor: KServe merges the rest in.
    assert set(entry) == {"trafficPercent", "predictor"}
    assert set(entry["predictor"]) == {"name", "containers"}
    assert entry["predictor"]["name"] == "canary"
    canary = canary_containers(isvc)["canary"]
    stable = container_of(isvc)
    assert canary["name"] == "kserve-container"
    assert canary["image"] == "ghcr.io/torch-kserve/torch-predictor:0.2.0"
    assert env_of(canary)["STORAGE_URI"] == "gs://example-models/doubler/v2"
    app_version = helm.Chart.load(CHART_DIR).metadata["appVersion"]
    assert stable["image"].endswith(f"/torch-predictor:{app_version}")
    assert env_of(stable)["STORAGE_URI"] == "gs://example-models/doubler/v1"
    assert validate_isvc(isvc) == []


def test_a_canary_defaults_to_the_stable_image_model_and_resources():
    isvc = isvc_for(standard(canary={"enabled": True, "trafficPercent": 10}))
    assert "name" not in isvc["spec"]["predictor"]  # <fullname>-predictor, KServe's default
    assert canary_containers(isvc) == {"canary": container_of(isvc)}


def _without_canary_values(container: dict) -> dict:
    rest = {k: v for k, v in container.items() if k not in ("image", "resources")}
    rest["env"] = [e for e in container["env"] if e["name"] != "STORAGE_URI"]
    return rest


def test_the_canary_container_is_built_like_the_stable_one_from_every_container_value():
    """KServe replaces a canary's container list whole, so the canary's container must be the
    stable one in everything but what the canary changes (one template builds both)."""
    values = standard(
        transport="grpc",
        gpu={"enabled": True, "count": 2},
        model={
            "storageUri": "gs://models/v1",
            "handler": "handlers:Thumbnails",
            "dtype": "float16",
        },
        server={"maxBatchSize": 8, "maxInflight": 64, "extraArgs": ["--log_level=debug"]},
        env=[{"name": "EXTRA", "value": "1"}],
        probes={"readiness": {"path": "/v2/health/ready", "periodSeconds": 7}},
        terminationGracePeriodSeconds=45,
        canary={
            "enabled": True,
            "trafficPercent": 5,
            "image": "registry.example:5000/team/torch-predictor@sha256:" + "a" * 64,
            "storageUri": "gs://models/v2",
            "resources": {"limits": {"cpu": "3", "memory": "6Gi"}},
        },
    )
    isvc = isvc_for(values)
    stable = container_of(isvc)
    canary = canary_containers(isvc)["canary"]
    assert _without_canary_values(canary) == _without_canary_values(stable)
    assert "--device=cuda" in canary["args"] and "--handler=handlers:Thumbnails" in canary["args"]
    assert canary["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert canary["image"] == "registry.example:5000/team/torch-predictor@sha256:" + "a" * 64
    assert env_of(canary)["STORAGE_URI"] == "gs://models/v2"
    # The canary's own resources, with the GPUs every replica of this chart runs on.
    assert canary["resources"] == {"limits": {"cpu": "3", "memory": "6Gi", "nvidia.com/gpu": "2"}}
    assert stable["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert validate_isvc(isvc) == []


def test_abn_variants_render_in_order_with_their_own_values_over_the_stable_defaults():
    isvc = isvc_of("standard-abn")
    entries = isvc["spec"]["canary"]
    assert [(e["predictor"]["name"], e["trafficPercent"]) for e in entries] == [
        ("model-b", 20),
        ("model-c", 20),
        ("shadow", 0),
    ]
    assert [e["predictor"].get("minReplicas") for e in entries] == [None, 1, 1]
    stable = container_of(isvc)
    containers = canary_containers(isvc)
    b, c, shadow = containers["model-b"], containers["model-c"], containers["shadow"]
    assert b["image"] == stable["image"] and b["resources"] == stable["resources"]
    assert env_of(b)["STORAGE_URI"] == "gs://example-models/doubler/v2"
    assert c["image"] == "ghcr.io/torch-kserve/torch-predictor:0.2.0"
    assert env_of(c)["STORAGE_URI"] == "gs://example-models/doubler/v3"
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "2Gi"},
        "limits": {"cpu": "4", "memory": "4Gi"},
    }
    assert shadow["image"] == "ghcr.io/torch-kserve/torch-predictor:0.2.0"
    assert env_of(shadow)["STORAGE_URI"] == env_of(stable)["STORAGE_URI"]
    for container in containers.values():
        assert _without_canary_values(container) == _without_canary_values(stable)
    assert "name" not in isvc["spec"]["predictor"]
    assert validate_isvc(isvc) == []


def test_variants_are_rendered_instead_of_the_single_canary():
    values = standard(
        canary={
            "enabled": True,
            "name": "single",
            "trafficPercent": 50,
            "image": "example/single:1",
            "variants": [{"name": "only", "trafficPercent": 30}],
        }
    )
    (entry,) = isvc_for(values)["spec"]["canary"]
    assert entry["predictor"]["name"] == "only" and entry["trafficPercent"] == 30


def test_canary_replicas_follow_kserves_rule():
    """minReplicas when set, else ceil(stable minReplicas x trafficPercent / 100): what the
    notes say matches KServe's rule as tests/chart_helpers.canary_predictors applies it."""
    variants = [
        {"name": "a", "trafficPercent": 10},
        {"name": "b", "trafficPercent": 30},
        {"name": "c", "trafficPercent": 0},
        {"name": "d", "trafficPercent": 5, "minReplicas": 3},
    ]
    values = standard(
        autoscaling={"minReplicas": 4, "maxReplicas": 8},
        canary={"enabled": True, "variants": variants},
    )
    rendered = render(values)
    isvc = one(objects(rendered), "InferenceService")
    replicas = {name: p["minReplicas"] for name, p in canary_predictors(isvc).items()}
    assert replicas == {"a": 1, "b": 2, "c": 0, "d": 3}
    for name, count in replicas.items():
        assert f", replicas {count}" in rendered[NOTES].split(f"\n  {name}: ")[1].splitlines()[1]
    for predictor in canary_predictors(isvc).values():
        # Canaries do not autoscale: KServe drops these, and the chart never sets them.
        assert not {"maxReplicas", "scaleMetric", "scaleTarget"} & set(predictor)


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_dark_launch_gets_zero_percent_and_needs_min_replicas_for_a_pod(min_replicas):
    values = standard(canary={"enabled": True, "trafficPercent": 0, "minReplicas": min_replicas})
    rendered = render(values)
    isvc = one(objects(rendered), "InferenceService")
    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 0  # rendered, not dropped as empty
    assert ("minReplicas" in entry["predictor"]) == (min_replicas == 1)
    notes = rendered[NOTES]
    assert f"canary: 0% -> Service {FULLNAME}-canary-predictor (dark launch" in notes
    assert ("a dark launch wants minReplicas: 1" in notes) == (min_replicas == 0)
    script = one(objects(rendered), "Pod")["spec"]["containers"][0]["args"][0]
    assert ("canary canary: readiness" in script) == (min_replicas == 1)
    assert ("it may have no pods: not checked" in script) == (min_replicas == 0)


def test_kserves_webhook_limits_are_accepted_up_to_the_edge():
    """What KServe accepts renders: percents adding up to exactly 100 (the stable predictor
    then gets none), minReplicas equal to the stable one's, a name beside predictorName."""
    values = standard(
        predictorName="blue",
        autoscaling={"minReplicas": 2, "maxReplicas": 4},
        canary={
            "enabled": True,
            "variants": [
                {"name": "green", "trafficPercent": 60, "minReplicas": 2},
                {"name": "red", "trafficPercent": 40},
            ],
        },
    )
    rendered = render(values)
    isvc = one(objects(rendered), "InferenceService")
    assert [e["trafficPercent"] for e in isvc["spec"]["canary"]] == [60, 40]
    assert f"stable predictor {FULLNAME}-blue-predictor, which gets 0% of" in rendered[NOTES]
    assert validate_isvc(isvc) == []


def test_helm_test_calls_the_named_stable_service_and_each_canarys_own():
    script = one(objects(render_named("standard-canary")), "Pod")["spec"]["containers"][0]
    script = script["args"][0]
    stable = f"URL=http://{FULLNAME}-stable-predictor.{NAMESPACE}.svc.cluster.local"
    canary = f"URL=http://{FULLNAME}-canary-predictor.{NAMESPACE}.svc.cluster.local"
    assert stable in script and canary in script
    assert (
        script.index(stable)
        < script.index('"$URL/v1/models/model:predict"')
        < (script.index(canary))
    )
    after = script[script.index(canary) :]
    assert '"$URL/v2/health/ready"' in after and '"$URL/v2/models/model/ready"' in after
    grpc = one(objects(render({**values_of("standard-canary"), "transport": "grpc"})), "Pod")
    grpc_script = grpc["spec"]["containers"][0]["args"][0]
    after = grpc_script[grpc_script.index(canary) :]
    assert "grpc ServerReady" in after and "grpc ModelReady" in after
    # Without predictorName: KServe's default names.
    default = one(objects(render(standard())), "Pod")["spec"]["containers"][0]["args"][0]
    assert f"URL=http://{FULLNAME}-predictor.{NAMESPACE}.svc.cluster.local" in default


def test_knative_renders_keep_canary_traffic_percent_and_no_standard_mode_fields():
    for name in RENDERS:
        isvc = isvc_of(name)
        if isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] != "Knative":
            continue
        assert "canary" not in isvc["spec"], name
        assert "name" not in isvc["spec"]["predictor"], name
    knative = isvc_of("canary")
    assert knative["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canaryStatuses" not in render_named("canary")[NOTES]


def test_standard_canary_notes_list_each_variant_how_to_reach_it_promote_and_roll_back():
    notes = render_named("standard-abn")[NOTES]
    assert f"beside the stable predictor {FULLNAME}-predictor, which gets 60% of" in notes
    for name, percent in (("model-b", 20), ("model-c", 20), ("shadow", 0)):
        service = f"{FULLNAME}-{name}-predictor"
        assert f"  {name}: {percent}% -> Service {service}" in notes
        assert f"kubectl port-forward svc/{service} -n {NAMESPACE} 8080:80" in notes
        proxy = f"/api/v1/namespaces/{NAMESPACE}/services/{service}:80/proxy/v2/models/model/ready"
        assert f"kubectl get --raw {proxy}" in notes
        assert f"--set predictorName={name} --set canary.enabled=false" in notes
        promote = f"python -m predictor.rollout promote {FULLNAME} -n {NAMESPACE}"
        assert f"{promote} --canary-name {name}" in notes
    assert f"kubectl get inferenceservice {FULLNAME} -n {NAMESPACE}" in notes
    assert "jsonpath='{.status.canaryStatuses}'" in notes
    assert '[?(@.type=="CanaryPredictorReady")]' in notes
    assert f"python -m predictor.rollout rollback {FULLNAME} -n {NAMESPACE}" in notes
    rollback = (
        f"helm upgrade {RELEASE} <chart> -n {NAMESPACE} --reuse-values --set canary.enabled=false"
    )
    assert (
        f"Roll back (the canaries go, the stable predictor keeps serving):\n    {rollback}\n"
        in (notes)
    )
    # None of the Knative mode's revision instructions.
    assert "latest revision" not in notes and "canary.trafficPercent=0" not in notes
    grpc_notes = render({**values_of("standard-canary"), "transport": "grpc"})[NOTES]
    assert "grpcurl -plaintext -proto grpc_predict_v2.proto localhost:8081" in grpc_notes


def _helm_promotions(notes: str) -> dict[str, list[str]]:
    """The `helm upgrade ... --set predictorName=NAME ...` lines of the notes, by NAME."""
    found = {}
    for line in notes.splitlines():
        if not line.strip().startswith("helm upgrade"):
            continue
        words = shlex.split(line)
        if "canary.enabled=false" in words:
            names = [w.split("=", 1)[1] for w in words if w.startswith("predictorName=")]
            if names:
                found[names[0]] = words
    return found


def _deep_merge(values: dict, override: dict) -> dict:
    merged = copy.deepcopy(values)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(values_of("standard-abn"), id="abn"),
        pytest.param(values_of("standard-canary"), id="canary"),
        pytest.param(
            standard(
                image={"digest": "sha256:" + "b" * 64},
                canary={
                    "enabled": True,
                    "trafficPercent": 10,
                    "name": "v2",
                    "image": "registry.example:5000/team/torch-predictor:0.3.0@sha256:" + "c" * 64,
                },
            ),
            id="image-with-registry-port-and-digest",
        ),
    ],
)
def test_promoting_with_the_printed_helm_command_makes_the_canary_the_stable_predictor(values):
    """The notes' `helm upgrade --reuse-values ...` for a canary renders a stable predictor
    with the canary's name and container and no canaries: the promotion KServe expects, so
    that the canary's Deployment becomes the stable one."""
    rendered = render(values)
    before = one(objects(rendered), "InferenceService")
    promotions = _helm_promotions(rendered[NOTES])
    assert set(promotions) == {e["predictor"]["name"] for e in before["spec"]["canary"]}
    for name, words in promotions.items():
        promoted = copy.deepcopy(values)
        for flag, expression in zip(words, words[1:], strict=False):
            if flag == "--set":
                promoted = _deep_merge(promoted, helm.parse_set_string(expression))
            elif flag == "--set-json":
                promoted = _deep_merge(promoted, helm.parse_set_json(expression))
        after = one(objects(render(promoted)), "InferenceService")
        assert "canary" not in after["spec"]
        assert after["spec"]["predictor"]["name"] == name
        assert container_of(after) == canary_containers(before)[name]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(
            standard(canary={"enabled": True, "trafficPercent": 0, "minReplicas": 1}), id="dark"
        ),
        pytest.param(
            standard(
                transport="grpc",
                gpu={"enabled": True},
                canary={
                    "enabled": True,
                    "trafficPercent": 25,
                    "resources": {"limits": {"cpu": "3"}},
                },
            ),
            id="grpc-gpu",
        ),
        pytest.param(
            standard(
                deploymentMode="RawDeployment",
                predictorName="v1",
                canary={"enabled": True, "trafficPercent": 10, "name": "v2"},
            ),
            id="raw-deployment",
        ),
    ],
)
def test_standard_canary_renders_pass_both_isvc_schemas(values):
    isvc = isvc_for(values)
    assert validate_isvc(isvc) == []
    assert reference_schema_errors(isvc) == []


def _variants(*entries) -> dict:
    return {"enabled": True, "trafficPercent": 10, "variants": list(entries)}


CANARY_REFUSALS = [
    pytest.param(
        standard(
            canary=_variants(
                {"name": "a", "trafficPercent": 10}, {"name": "a", "trafficPercent": 5}
            )
        ),
        [
            "canary.variants[1].name=a is taken by canary.variants[0] already",
            "KServe's webhook refuses it",
            '("canary predictor.name "a" is duplicated")',
        ],
        id="duplicate-variant-names",
    ),
    pytest.param(
        standard(
            predictorName="stable", canary={"enabled": True, "trafficPercent": 10, "name": "stable"}
        ),
        [
            "canary.name=stable is predictorName too",
            '("canary predictor.name "stable" conflicts with stable predictor name")',
        ],
        id="canary-named-like-the-stable-predictor",
    ),
    pytest.param(
        standard(
            predictorName="b",
            canary=_variants(
                {"name": "a", "trafficPercent": 5}, {"name": "b", "trafficPercent": 5}
            ),
        ),
        ["canary.variants[1].name=b is predictorName too", "conflicts with stable predictor name"],
        id="variant-named-like-the-stable-predictor",
    ),
    pytest.param(
        standard(
            canary=_variants(
                {"name": "a", "trafficPercent": 60}, {"name": "b", "trafficPercent": 50}
            )
        ),
        [
            "the canaries' trafficPercent values add up to 110",
            '("sum of canary trafficPercent values (110) must be <= 100")',
        ],
        id="percents-above-100",
    ),
    pytest.param(
        standard(
            autoscaling={"minReplicas": 2},
            canary={"enabled": True, "trafficPercent": 10, "minReplicas": 3},
        ),
        [
            "canary.minReplicas=3 is above autoscaling.minReplicas=2",
            '("canary "canary" minReplicas (3) must not exceed stable predictor minReplicas (2)")',
        ],
        id="canary-min-replicas-above-the-stable",
    ),
    pytest.param(
        standard(canary=_variants({"name": "b", "trafficPercent": 10, "minReplicas": 2})),
        ["canary.variants[0].minReplicas=2 is above autoscaling.minReplicas=1"],
        id="variant-min-replicas-above-the-stable",
    ),
    pytest.param(
        {"canary": _variants({"name": "b", "trafficPercent": 10})},
        [
            "Knative splits traffic between two revisions only;",
            "variants need deploymentMode Standard",
        ],
        id="variants-in-knative-mode",
    ),
    pytest.param(
        {"canary": {"enabled": True, "trafficPercent": 10, "image": "example/predictor:2"}},
        ["canary.image applies to deploymentMode Standard only", "set image.tag"],
        id="canary-image-in-knative-mode",
    ),
    pytest.param(
        {
            "deploymentMode": "Serverless",
            "canary": {"enabled": True, "trafficPercent": 10, "minReplicas": 1},
        },
        ["canary.minReplicas applies to deploymentMode Standard only"],
        id="canary-min-replicas-in-serverless-mode",
    ),
    pytest.param(
        {"predictorName": "stable"},
        [
            "predictorName=stable needs deploymentMode Standard",
            f"Knative Service {FULLNAME}-predictor",
        ],
        id="predictor-name-in-knative-mode",
    ),
    pytest.param(
        standard(canary={"enabled": True, "trafficPercent": 10, "name": "Canary_1"}),
        ["/canary/name", "does not match pattern"],
        id="bad-canary-name",
    ),
    pytest.param(
        standard(canary=_variants({"name": "-b", "trafficPercent": 10})),
        ["/canary/variants/0/name", "does not match pattern"],
        id="bad-variant-name",
    ),
    pytest.param(
        standard(predictorName="1st"),
        ["/predictorName", "does not match pattern"],
        id="bad-predictor-name",
    ),
    pytest.param(
        standard(canary=_variants({"name": "b", "trafficPercent": 10, "maxReplicas": 3})),
        ["'/canary/variants/0': additional properties 'maxReplicas' not allowed"],
        id="variant-max-replicas",
    ),
    pytest.param(
        standard(canary=_variants({"name": "b", "trafficPercent": 10, "scaleMetric": "cpu"})),
        ["'/canary/variants/0': additional properties 'scaleMetric' not allowed"],
        id="variant-scale-metric",
    ),
    pytest.param(
        standard(canary={"enabled": True, "trafficPercent": 10, "scaleTarget": 5}),
        ["'/canary': additional properties 'scaleTarget' not allowed"],
        id="canary-scale-target",
    ),
    pytest.param(
        standard(canary=_variants({"name": "b"})),
        ["/canary/variants/0", "trafficPercent"],
        id="variant-without-a-percent",
    ),
    pytest.param(
        standard(canary=_variants({"name": "b", "trafficPercent": 101})),
        ["/canary/variants/0/trafficPercent", "maximum: got 101, want 100"],
        id="variant-percent-101",
    ),
    pytest.param(
        standard(canary={"enabled": True, "trafficPercent": 10, "name": "c" * 40}),
        ["makes the canary's Service", "Kubernetes refuses Service names over 63"],
        id="canary-service-name-too-long",
    ),
]


@pytest.mark.parametrize(("values", "messages"), CANARY_REFUSALS)
def test_what_kserves_webhook_would_refuse_the_chart_refuses(values, messages):
    with pytest.raises(helm.HelmError) as raised:
        render(values)
    for message in messages:
        assert message in str(raised.value)


def test_the_variant_schema_says_why_it_has_no_autoscaling_fields():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    items = schema["properties"]["canary"]["properties"]["variants"]["items"]
    assert items["additionalProperties"] is False
    assert not {"maxReplicas", "scaleMetric", "scaleTarget", "autoScaling"} & set(
        items["properties"]
    )
    assert "canary uses fixed replicas" in items["description"]
