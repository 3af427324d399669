"""The rollout CLI against a real HTTP server speaking the Kubernetes API (tests/fake_kube_api.py)
with KServe's controller simulated; no predictor processes here (see test_rollout_e2e.py).

Every write the server accepts is validated with the chart tests' InferenceService schema, so
each patch the CLI sends is checked on the object it produces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from predictor.rollout import isvc as spec
from tests.fake_kube_api import (
    ISVC_COLLECTION,
    FakeKubeAPI,
    KServeSimulator,
    json_patch,
    merge_patch,
    rollout_cli,
)
from tests.isvc_schema import assert_valid_isvc, validate_isvc

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ISVC_COLLECTION.format(namespace="ml")
OLD, NEW, BROKEN = "pvc://models/v1", "pvc://models/v2", "pvc://models/never-ready"


def manifest(storage_uri: str = OLD) -> dict:
    """The repo's own InferenceService (manifests/base), serving `storage_uri`."""
    isvc = yaml.safe_load((ROOT / "manifests/base/inferenceservice.yaml").read_text())
    isvc["metadata"]["name"] = "torch"
    container = isvc["spec"]["predictor"]["containers"][0]
    container["env"].append({"name": "STORAGE_URI", "value": storage_uri})
    return isvc


def model_shaped(storage_uri: str = OLD) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "torch",
            "namespace": "ml",
            "annotations": {spec.DEPLOYMENT_MODE_ANNOTATION: "Knative"},
        },
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": storage_uri}}
        },
    }


@pytest.fixture
def cluster(tmp_path):
    """(api, kubeconfig, client): a fake API server, KServe simulated, `torch` in namespace ml.

    The backends' URLs are never called here: only `run` sends requests to revisions."""
    with FakeKubeAPI(validator=validate_isvc) as api:
        KServeSimulator(api, {OLD: "http://127.0.0.1:9/old", NEW: "http://127.0.0.1:9/new"})
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        objects = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
        objects.create_namespaced_custom_object(
            spec.GROUP, spec.VERSION, "ml", spec.PLURAL, manifest()
        )
        yield api, kubeconfig, objects
        assert api.errors == []


def stored(api: FakeKubeAPI) -> dict:
    return api.get(COLLECTION, "torch")


def storage_uri(obj: dict) -> str | None:
    return spec.model_of(obj["spec"]["predictor"])["storageUri"]


# --- patches on their own, validated with the schema ---------------------------------------


@pytest.mark.parametrize("make", [manifest, model_shaped], ids=["containers", "model"])
@pytest.mark.parametrize("change", [{"storage_uri": NEW}, {"image": "registry/predictor:2"}])
def test_every_patch_gives_a_valid_inference_service(make, change):
    isvc = make()
    isvc["metadata"]["resourceVersion"] = "7"
    started = merge_patch(
        isvc, spec.start_patch(isvc, 10, change.get("image"), change.get("storage_uri"))
    )
    assert_valid_isvc(started)
    assert started["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert spec.model_of(started["spec"]["predictor"]) != spec.model_of(isvc["spec"]["predictor"])
    assert started["metadata"]["annotations"][spec.TAG_ROUTING_ANNOTATION] == "true"
    assert_valid_isvc(merge_patch(started, spec.percent_patch(50)))
    promoted = merge_patch(started, spec.promote_patch())
    assert_valid_isvc(promoted)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert spec.PREVIOUS_SPEC_ANNOTATION not in promoted["metadata"]["annotations"]
    drain, restore = spec.rollback_patches(started)
    drained = merge_patch(started, drain)
    assert_valid_isvc(drained)
    restored = json_patch(drained, restore)
    assert_valid_isvc(restored)
    assert restored["spec"] == isvc["spec"]


def test_the_schema_check_would_catch_a_bad_patch():
    broken = merge_patch(manifest(), {"spec": {"predictor": {"canaryTrafficPercent": "ten"}}})
    assert validate_isvc(broken)


def test_start_keeps_the_recorded_spec_of_a_rollout_in_progress():
    isvc = manifest()
    first = merge_patch(isvc, spec.start_patch(isvc, 10, None, NEW))
    second = spec.start_patch(first, 20, None, "pvc://models/v3")
    assert spec.PREVIOUS_SPEC_ANNOTATION not in second["metadata"]["annotations"]
    again = merge_patch(first, second)
    assert (
        json.loads(again["metadata"]["annotations"][spec.PREVIOUS_SPEC_ANNOTATION])
        == (isvc["spec"]["predictor"])
    )


# --- the fake API server does what the real one does with the client's requests ------------


def test_server_applies_merge_and_json_patches_as_the_client_sends_them(cluster):
    api, _, objects = cluster
    args = (spec.GROUP, spec.VERSION, "ml", spec.PLURAL, "torch")
    objects.patch_namespaced_custom_object(*args, {"spec": {"predictor": {"minReplicas": 2}}})
    objects.patch_namespaced_custom_object(
        *args,
        [{"op": "replace", "path": "/spec/predictor/maxReplicas", "value": 5}],
        _content_type="application/json-patch+json",
    )
    kinds = [kind for kind, _ in api.patches]
    assert kinds == ["application/merge-patch+json", "application/json-patch+json"]
    obj = objects.get_namespaced_custom_object(*args)
    assert (obj["spec"]["predictor"]["minReplicas"], obj["spec"]["predictor"]["maxReplicas"]) == (
        2,
        5,
    )
    assert obj["metadata"]["generation"] == 3


@pytest.mark.parametrize(
    "body, kind, code",
    [
        (
            {"metadata": {"resourceVersion": "1"}, "spec": {"predictor": {"minReplicas": 2}}},
            None,
            409,
        ),
        (
            [{"op": "test", "path": "/spec/predictor/minReplicas", "value": 99}],
            "application/json-patch+json",
            422,
        ),
        ({"spec": {"predictor": {"minReplicas": "two"}}}, None, 422),
        (
            {"spec": {"predictor": {"minReplicas": 2}}},
            "application/strategic-merge-patch+json",
            415,
        ),
    ],
    ids=["stale-resource-version", "failed-test-op", "schema", "strategic-merge"],
)
def test_server_refuses_what_the_real_one_refuses(cluster, body, kind, code):
    api, _, objects = cluster
    before = stored(api)
    extra = {"_content_type": kind} if kind else {}
    with pytest.raises(ApiException) as err:
        objects.patch_namespaced_custom_object(
            spec.GROUP, spec.VERSION, "ml", spec.PLURAL, "torch", body, **extra
        )
    assert err.value.status == code
    assert stored(api) == before


def test_a_patch_cannot_write_status(cluster):
    api, _, objects = cluster
    objects.patch_namespaced_custom_object(
        spec.GROUP, spec.VERSION, "ml", spec.PLURAL, "torch", {"status": {"url": "http://evil"}}
    )
    assert stored(api)["status"]["url"] == "http://torch.ml.example.com"


# --- the commands that need no predictor ---------------------------------------------------


def test_status_as_table_and_json(cluster):
    _, kubeconfig, _ = cluster
    table = rollout_cli(kubeconfig, "status", "torch")
    assert table.returncode == 0, table.stderr
    assert "InferenceService ml/torch: Ready" in table.stdout
    assert "torch-predictor-00001" in table.stdout
    as_json = rollout_cli(kubeconfig, "-n", "ml", "status", "torch", "-o", "json")
    info = json.loads(as_json.stdout)
    assert info["ready"] is True
    assert info["revisions"]["latestReady"] == "torch-predictor-00001"
    assert info["traffic"] == [
        {
            "revision": "torch-predictor-00001",
            "tag": "latest",
            "percent": 100,
            "latest": True,
            "url": "http://127.0.0.1:9/old",
        }
    ]
    assert info["model"]["storageUri"] == OLD


def test_start_promote_and_rollback_move_the_stored_object(cluster):
    api, kubeconfig, _ = cluster
    started = rollout_cli(
        kubeconfig, "start", "torch", "--storage-uri", NEW, "--percent", "20", "--timeout", "20s"
    )
    assert started.returncode == 0, started.stdout + started.stderr
    obj = stored(api)
    assert storage_uri(obj) == NEW
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert [
        (t["tag"], t["percent"]) for t in obj["status"]["components"]["predictor"]["traffic"]
    ] == [("latest", 20), ("prev", 80)]
    # Model and percent went in one patch: KServe never saw the new model without a percent.
    assert len(api.patches) == 1

    status = json.loads(rollout_cli(kubeconfig, "status", "torch", "-o", "json").stdout)
    assert status["rolloutInProgress"] is True
    assert status["revisions"]["previousRolledout"] is None
    assert status["revisions"]["latestRolledout"] == "torch-predictor-00001"

    rolled_back = rollout_cli(kubeconfig, "rollback", "torch", "--timeout", "20s")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    obj = stored(api)
    assert obj["spec"] == manifest()["spec"]
    assert spec.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"]["annotations"]
    assert obj["status"]["components"]["predictor"]["traffic"][0]["percent"] == 100
    assert [kind for kind, _ in api.patches][1:] == [
        "application/merge-patch+json",
        "application/json-patch+json",
    ]

    again = rollout_cli(
        kubeconfig, "start", "torch", "--storage-uri", NEW, "--percent", "10", "--timeout", "20s"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    promoted = rollout_cli(kubeconfig, "promote", "torch", "--timeout", "20s")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    obj = stored(api)
    assert storage_uri(obj) == NEW
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    component = obj["status"]["components"]["predictor"]
    assert component["latestRolledoutRevision"] == component["latestCreatedRevision"]
    assert [t["percent"] for t in component["traffic"]] == [100]


def test_dry_run_prints_the_patch_and_changes_nothing(cluster):
    api, kubeconfig, _ = cluster
    before = stored(api)
    result = rollout_cli(
        kubeconfig, "--dry-run", "start", "torch", "--storage-uri", NEW, "--percent", "10"
    )
    assert result.returncode == 0, result.stderr
    patch = json.loads(result.stdout[result.stdout.index("{") :])
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert_valid_isvc(merge_patch(before, patch))
    assert stored(api) == before
    assert api.patches == []


def test_a_revision_that_never_gets_ready_times_out_with_the_reason(cluster):
    api, kubeconfig, _ = cluster
    result = rollout_cli(
        kubeconfig, "start", "torch", "--storage-uri", BROKEN, "--percent", "10", "--timeout", "2s"
    )
    assert result.returncode == 1
    assert "timed out after 2s" in result.stderr
    assert "Revision 'torch-predictor-00002' is not ready" in result.stderr
    assert storage_uri(stored(api)) == BROKEN  # start leaves it to rollback

    rolled_back = rollout_cli(kubeconfig, "rollback", "torch", "--timeout", "20s")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    obj = stored(api)
    assert storage_uri(obj) == OLD
    assert obj["status"]["conditions"][-1]["status"] == "True"


def test_unknown_inference_service_is_a_clear_error(cluster):
    _, kubeconfig, _ = cluster
    result = rollout_cli(kubeconfig, "status", "nope")
    assert result.returncode == 1
    assert "API server answered 404" in result.stderr


def test_global_options_after_the_subcommand(cluster):
    _, kubeconfig, _ = cluster
    result = rollout_cli(kubeconfig, "status", "torch", "-n", "ml", "--timeout", "5s", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["namespace"] == "ml"


def test_waiting_follows_the_watch_until_the_controller_catches_up(tmp_path):
    """The controller reconciles 1 s after each write: the CLI's first read finds the old
    status, so it succeeds only by watching the object change."""
    with FakeKubeAPI(validator=validate_isvc) as api:
        kserve = KServeSimulator(
            api, {OLD: "http://127.0.0.1:9/old", NEW: "http://127.0.0.1:9/new"}, delay=1.0
        )
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        api.create(COLLECTION, manifest())
        kserve.reconcile(COLLECTION, "torch")
        result = rollout_cli(
            kubeconfig,
            "start",
            "torch",
            "--storage-uri",
            NEW,
            "--percent",
            "30",
            "--timeout",
            "30s",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "torch-predictor-00002(latest)=30%" in result.stdout
        assert api.errors == []


def test_rollback_without_a_rollout_changes_nothing(cluster):
    api, kubeconfig, _ = cluster
    before = stored(api)
    result = rollout_cli(kubeconfig, "rollback", "torch")
    assert result.returncode == 0, result.stderr
    assert "nothing to roll back" in result.stdout
    assert stored(api) == before


def test_start_with_the_model_already_served_is_refused(cluster):
    api, kubeconfig, _ = cluster
    before = stored(api)
    result = rollout_cli(kubeconfig, "start", "torch", "--storage-uri", OLD, "--percent", "10")
    assert result.returncode == 1
    assert f"already serves image=ghcr.io/torch-kserve/torch-predictor storageUri={OLD}" in (
        result.stderr
    )
    assert stored(api) == before


def test_start_with_an_image_changes_the_serving_container(cluster):
    """What the delivery workflow runs: a new predictor image, same model."""
    api, kubeconfig, _ = cluster
    result = rollout_cli(
        kubeconfig,
        "-n",
        "ml",
        "--timeout",
        "20s",
        "start",
        "torch",
        "--image",
        "ghcr.io/torch-kserve/torch-predictor:2.0",
        "--percent",
        "15",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    predictor = stored(api)["spec"]["predictor"]
    assert predictor["containers"][0]["image"] == "ghcr.io/torch-kserve/torch-predictor:2.0"
    assert predictor["canaryTrafficPercent"] == 15
    assert storage_uri(stored(api)) == OLD
    previous = json.loads(stored(api)["metadata"]["annotations"][spec.PREVIOUS_SPEC_ANNOTATION])
    assert previous["containers"][0]["image"] == "ghcr.io/torch-kserve/torch-predictor"


def test_raw_deployment_mode_cannot_canary():
    isvc = manifest()
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    with pytest.raises(spec.RolloutError, match="not in Knative mode: its canaries are spec"):
        spec.start_patch(isvc, 10, None, NEW)


def test_run_dry_run_prints_every_step_and_changes_nothing(cluster):
    api, kubeconfig, _ = cluster
    before = stored(api)
    result = rollout_cli(
        kubeconfig, "run", "torch", "--storage-uri", NEW, "--steps", "10,50,100", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("# ")] == [
        "# start canary at 10%: PATCH (merge-patch) inferenceservices ml/torch",
        "# canary to 50%: PATCH (merge-patch) inferenceservices ml/torch",
        "# promote: PATCH (merge-patch) inferenceservices ml/torch",
    ]
    assert stored(api) == before
    assert api.patches == []
