"""The rollout CLI in KServe's Standard mode (`spec.canary`), against the real HTTP server
speaking the Kubernetes API (tests/fake_kube_api.py) with KServe's Standard-mode controller
simulated (KServeStandardSimulator) and KServe's canary webhook rules (kserve_webhook) checked
on every write beside the InferenceService schema. No predictor processes here except where
`run` needs them (test_rollout_e2e.py runs the whole flow with real ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from predictor.rollout import isvc as spec
from predictor.rollout import standard
from tests.chart_helpers import REFERENCE_SCHEMA, reference_schema_errors
from tests.fake_kube_api import (
    DEPLOYMENTS,
    HTTPROUTES,
    ISVC_COLLECTION,
    SERVICES,
    FakeKubeAPI,
    KServeStandardSimulator,
    json_patch,
    kserve_webhook,
    merge_patch,
    rollout_cli,
)
from tests.isvc_schema import validate_isvc

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ISVC_COLLECTION.format(namespace="ml")
OLD, NEW, OTHER = "pvc://models/v1", "pvc://models/v2", "pvc://models/v3"
BROKEN = "pvc://models/never-ready"
FAST = ["--timeout", "5s"]


def standard_isvc(storage_uri: str = OLD) -> dict:
    """The repo's own InferenceService (manifests/base) in Standard mode, serving storage_uri."""
    isvc = yaml.safe_load((ROOT / "manifests/base/inferenceservice.yaml").read_text())
    isvc["metadata"].update(name="torch", namespace="ml")
    isvc["metadata"]["annotations"][spec.DEPLOYMENT_MODE_ANNOTATION] = "Standard"
    container = isvc["spec"]["predictor"]["containers"][0]
    container["env"].append({"name": "STORAGE_URI", "value": storage_uri})
    return isvc


def all_errors(obj: dict) -> list[str]:
    """What the API server would refuse: the schema, KServe's webhook."""
    return validate_isvc(obj) + kserve_webhook(obj)


def assert_accepted(obj: dict) -> None:
    assert all_errors(obj) == []
    if REFERENCE_SCHEMA.exists():  # the CRD's own strict schema, where ../shared has it
        assert reference_schema_errors(obj) == []


def storage_uri(predictor: dict) -> str | None:
    return spec.model_of(predictor)["storageUri"]


# --- patches on their own ----------------------------------------------------------------------


def test_patches_give_objects_kserve_accepts_and_promotion_keeps_the_canary_pod_spec():
    isvc = standard_isvc()
    isvc["metadata"]["resourceVersion"] = "7"
    started = merge_patch(isvc, standard.start_patch(isvc, "v2", 10, None, NEW))
    assert_accepted(started)
    [entry] = started["spec"]["canary"]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["name"] == "v2"
    assert storage_uri(entry["predictor"]) == NEW
    assert started["spec"]["predictor"] == isvc["spec"]["predictor"]  # the stable is untouched

    moved = json_patch(started, standard.percent_patch(started, "v2", 50))
    assert_accepted(moved)
    assert moved["spec"]["canary"][0]["trafficPercent"] == 50

    promoted = json_patch(moved, standard.promote_patch(moved, "v2"))
    assert_accepted(promoted)
    assert "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"]["name"] == "v2"
    assert storage_uri(promoted["spec"]["predictor"]) == NEW
    # The promoted spec is what KServe built the canary's pods from: same pod template.
    built = standard.merged(isvc["spec"]["predictor"], entry["predictor"])
    assert promoted["spec"]["predictor"] == built

    rolled_back = json_patch(moved, standard.rollback_patch(moved, "v2"))
    assert_accepted(rolled_back)
    assert rolled_back["spec"] == isvc["spec"]


def test_a_second_canary_is_added_beside_the_first_and_each_moves_alone():
    isvc = standard_isvc()
    one = merge_patch(isvc, standard.start_patch(isvc, "b", 20, None, NEW))
    two = merge_patch(one, standard.start_patch(one, "c", 30, None, OTHER))
    assert_accepted(two)
    assert [(c["predictor"]["name"], c["trafficPercent"]) for c in two["spec"]["canary"]] == [
        ("b", 20),
        ("c", 30),
    ]
    moved = json_patch(two, standard.percent_patch(two, "c", 40))
    assert [c["trafficPercent"] for c in moved["spec"]["canary"]] == [20, 40]
    only_c = json_patch(two, standard.rollback_patch(two, "b"))
    assert [c["predictor"]["name"] for c in only_c["spec"]["canary"]] == ["c"]
    none_left = json_patch(two, standard.rollback_patch(two, None))
    assert "canary" not in none_left["spec"]


def test_patches_that_target_one_entry_fail_when_the_list_changed_meanwhile():
    isvc = standard_isvc()
    two = merge_patch(isvc, standard.start_patch(isvc, "b", 20, None, NEW))
    two = merge_patch(two, standard.start_patch(two, "c", 30, None, OTHER))
    stale = standard.percent_patch(two, "c", 40)  # computed for [b, c]
    changed = json_patch(two, standard.rollback_patch(two, "b"))  # now [c]
    with pytest.raises(Exception, match="test failed|path not found"):
        json_patch(changed, stale)


@pytest.mark.parametrize(
    "name, message",
    [
        ("V2", "must be a DNS label"),
        ("2nd", "must be a DNS label"),
        ("stable", "is the stable predictor's name"),
        ("b", "already has a canary 'b'"),
        ("x" * 60, "longer than 63 characters"),
    ],
)
def test_names_kserve_would_refuse_are_refused_before_sending(name, message):
    isvc = standard_isvc()
    isvc["spec"]["predictor"]["name"] = "stable"
    isvc = merge_patch(isvc, standard.start_patch(isvc, "b", 10, None, NEW))
    with pytest.raises(spec.RolloutError, match=message):
        standard.start_patch(isvc, name, 10, None, OTHER)


def test_percents_over_100_in_all_are_refused_before_sending():
    isvc = standard_isvc()
    isvc = merge_patch(isvc, standard.start_patch(isvc, "b", 60, None, NEW))
    with pytest.raises(spec.RolloutError, match="110% of the traffic"):
        standard.start_patch(isvc, "c", 50, None, OTHER)
    isvc = merge_patch(isvc, standard.start_patch(isvc, "c", 40, None, OTHER))
    with pytest.raises(spec.RolloutError, match="at most 100% in all"):
        standard.percent_patch(isvc, "c", 41)


def test_the_webhook_rules_catch_what_a_careless_patch_would_send():
    """The simulated webhook is a real check: each rule refuses an object that breaks it."""
    isvc = standard_isvc()
    isvc["spec"]["predictor"]["name"] = "stable"
    entry = {"trafficPercent": 10, "predictor": {"name": "v2", "minReplicas": 1}}
    assert kserve_webhook({**isvc, "spec": {**isvc["spec"], "canary": [entry]}}) == []
    cases = {
        "canary is only supported in Standard deployment mode": lambda o: o["metadata"][
            "annotations"
        ].update({spec.DEPLOYMENT_MODE_ANNOTATION: "Knative"}),
        "is duplicated": lambda o: o["spec"]["canary"].append(json.loads(json.dumps(entry))),
        "conflicts with stable predictor name": lambda o: o["spec"]["canary"][0][
            "predictor"
        ].update(name="stable"),
        "must not set maxReplicas": lambda o: o["spec"]["canary"][0]["predictor"].update(
            maxReplicas=3
        ),
        "must not exceed stable predictor minReplicas (1)": lambda o: o["spec"]["canary"][0][
            "predictor"
        ].update(minReplicas=2),
        "must be <= 100": lambda o: o["spec"]["canary"][0].update(trafficPercent=101),
    }
    for message, breaks in cases.items():
        broken = json.loads(json.dumps({**isvc, "spec": {**isvc["spec"], "canary": [entry]}}))
        breaks(broken)
        assert any(message in error for error in kserve_webhook(broken)), message


def test_default_canary_names_come_from_what_the_canary_serves():
    isvc = standard_isvc()
    assert standard.default_canary_name(isvc, "ghcr.io/acme/predictor:2.1.0", None) == "v2-1-0"
    assert standard.default_canary_name(isvc, "ghcr.io/acme/predictor:Canary_B", None) == (
        "canary-b"
    )
    digest = "ghcr.io/acme/predictor@sha256:" + "ab12" * 16
    assert standard.default_canary_name(isvc, digest, None) == "sha-ab12ab12ab12"
    assert standard.default_canary_name(isvc, None, "gs://bucket/models/resnet-v3/") == (
        "resnet-v3"
    )


def test_the_mode_comes_from_the_status_then_the_annotation():
    isvc = standard_isvc()
    assert spec.deployment_mode(isvc) == spec.STANDARD
    isvc["metadata"]["annotations"][spec.DEPLOYMENT_MODE_ANNOTATION] = "Serverless"
    assert spec.deployment_mode(isvc) == spec.KNATIVE
    isvc["status"] = {"deploymentMode": "RawDeployment"}
    assert spec.deployment_mode(isvc) == spec.STANDARD
    isvc["status"] = {"deploymentMode": "ModelMesh"}
    with pytest.raises(spec.RolloutError, match="'ModelMesh': canaries need Standard or Knative"):
        spec.deployment_mode(isvc)


# --- the CLI against the fake API server ------------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    """(api, kubeconfig): `torch` in Standard mode serving OLD; NEW and OTHER have backends
    (never called here), BROKEN has none, so its canary never becomes ready."""
    backends = {uri: f"http://127.0.0.1:9/{uri[-2:]}" for uri in (OLD, NEW, OTHER)}
    with FakeKubeAPI(validator=all_errors) as api:
        kserve = KServeStandardSimulator(api, backends)
        api.create(COLLECTION, standard_isvc())
        kserve.reconcile(COLLECTION, "torch")
        yield api, api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        assert api.errors == []


def stored(api: FakeKubeAPI) -> dict:
    return api.get(COLLECTION, "torch")


def deployments(api: FakeKubeAPI) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in api.list(DEPLOYMENTS.format(namespace="ml"))}


def route_weights(api: FakeKubeAPI) -> list[tuple[str, int]]:
    route = api.get(HTTPROUTES.format(namespace="ml"), "torch-predictor")
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def test_start_adds_the_canary_and_waits_for_it_to_be_ready_with_its_share(cluster):
    api, kubeconfig = cluster
    result = rollout_cli(
        kubeconfig, *FAST, "start", "torch", "--storage-uri", NEW, "--percent", "20",
        "--canary-name", "v2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start canary 'v2' at 20%: patching ml/torch" in result.stdout
    assert "canary v2 20% ready" in result.stdout
    assert [d for d in deployments(api)] == ["torch-predictor", "torch-v2-predictor"]
    assert route_weights(api) == [("torch-predictor", 80), ("torch-v2-predictor", 20)]
    status = stored(api)["status"]
    assert status["canaryStatuses"] == [{"name": "v2", "ready": True, "trafficPercent": 20}]

    shown = json.loads(rollout_cli(kubeconfig, "status", "torch", "-o", "json").stdout)
    assert shown["deploymentMode"] == "Standard"
    rows = [(c["name"], c["trafficPercent"], c["ready"], c["service"]) for c in shown["canaries"]]
    assert rows == [("v2", 20, True, "torch-v2-predictor")]
    assert shown["stable"]["servedPercent"] == 80
    table = rollout_cli(kubeconfig, "status", "torch").stdout
    assert "(Standard mode)" in table
    assert "v2       canary  20%      20%     yes    torch-v2-predictor  pvc://models/v2" in table


def test_promote_makes_the_canary_deployment_the_stable_one_without_a_new_rollout(cluster):
    api, kubeconfig = cluster
    started = rollout_cli(
        kubeconfig, *FAST, "start", "torch", "--storage-uri", NEW, "--percent", "10",
        "--canary-name", "v2",
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    canary_before = deployments(api)["torch-v2-predictor"]

    result = rollout_cli(kubeconfig, *FAST, "promote", "torch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "promoted: ml/torch serves canary 'v2'" in result.stdout
    obj = stored(api)
    assert obj["spec"]["predictor"]["name"] == "v2"
    assert storage_uri(obj["spec"]["predictor"]) == NEW
    assert "canary" not in obj["spec"]
    assert "canaryStatuses" not in obj["status"]
    assert spec.condition(obj, standard.CANARY_CONDITION) == {}
    after = deployments(api)
    assert list(after) == ["torch-v2-predictor"]  # the old stable Deployment is gone
    promoted = after["torch-v2-predictor"]
    # Same object, same pod template: its pods were not replaced, only its replicas changed.
    assert promoted["metadata"]["uid"] == canary_before["metadata"]["uid"]
    assert promoted["spec"]["template"] == canary_before["spec"]["template"]
    assert route_weights(api) == [("torch-v2-predictor", 100)]
    assert [s["metadata"]["name"] for s in api.list(SERVICES.format(namespace="ml"))] == [
        "torch-v2-predictor"
    ]


def test_rollback_removes_the_canary_and_its_objects(cluster):
    api, kubeconfig = cluster
    before = stored(api)["spec"]
    rollout_cli(kubeconfig, *FAST, "start", "torch", "--storage-uri", NEW, "--percent", "10")
    assert standard.canary_names(stored(api)) == ["v2"]  # from the storage URI
    result = rollout_cli(kubeconfig, *FAST, "rollback", "torch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rolled back: ml/torch serves the stable model only" in result.stdout
    assert stored(api)["spec"] == before
    assert list(deployments(api)) == ["torch-predictor"]
    assert route_weights(api) == [("torch-predictor", 100)]
    again = rollout_cli(kubeconfig, *FAST, "rollback", "torch")
    assert again.returncode == 0 and "nothing to roll back" in again.stdout


def test_a_canary_that_never_becomes_ready_times_out_and_gets_no_traffic(cluster):
    api, kubeconfig = cluster
    result = rollout_cli(
        kubeconfig, "--timeout", "2s", "start", "torch", "--storage-uri", BROKEN, "--percent",
        "30",
    )  # fmt: skip
    assert result.returncode == 1
    assert "timed out after 2s waiting for canary 'never-ready'" in result.stderr
    assert "CanaryPredictorReady=False (CanariesNotReady" in result.stderr
    # KServe leaves a canary that is not ready out of the route: the stable keeps everything.
    assert route_weights(api) == [("torch-predictor", 100)]


def test_several_canaries_need_a_name_to_promote(cluster):
    api, kubeconfig = cluster
    for uri, name in ((NEW, "b"), (OTHER, "c")):
        done = rollout_cli(
            kubeconfig, *FAST, "start", "torch", "--storage-uri", uri, "--percent", "20",
            "--canary-name", name,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert route_weights(api) == [
        ("torch-predictor", 60),
        ("torch-b-predictor", 20),
        ("torch-c-predictor", 20),
    ]
    ambiguous = rollout_cli(kubeconfig, *FAST, "promote", "torch")
    assert ambiguous.returncode == 1
    assert "has 2 canaries (b, c): say which with --canary-name" in ambiguous.stderr
    result = rollout_cli(kubeconfig, *FAST, "promote", "torch", "--canary-name", "c")
    assert result.returncode == 0, result.stdout + result.stderr
    obj = stored(api)
    assert obj["spec"]["predictor"]["name"] == "c"
    assert standard.canary_names(obj) == ["b"]  # the other variant runs on beside it
    assert route_weights(api) == [("torch-c-predictor", 80), ("torch-b-predictor", 20)]


def test_run_dry_run_prints_every_step_and_changes_nothing(cluster):
    api, kubeconfig = cluster
    before = stored(api)
    result = rollout_cli(
        kubeconfig, "run", "torch", "--storage-uri", NEW, "--steps", "10,50,100", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("# ")] == [
        "# start canary 'v2' at 10%: PATCH (merge-patch) inferenceservices ml/torch",
        "# canary 'v2' to 50%: PATCH (json-patch) inferenceservices ml/torch",
        "# promote canary 'v2': PATCH (json-patch) inferenceservices ml/torch",
    ]
    assert stored(api) == before
    assert api.patches == []


def test_analysis_fails_when_the_serving_variant_answers_nothing():
    """Equal error counts on both sides are no pass when the side that serves now answered
    none: there is nothing to judge the canary against (a wrong model name, say)."""
    from predictor.rollout import analysis

    nowhere = analysis.Target("prev", "http://127.0.0.1:9")
    report = analysis.analyse(
        nowhere,
        analysis.Target("latest", "http://127.0.0.1:9"),
        "model",
        analysis.DEFAULT_REQUESTS,
        rounds=1,
        thresholds=analysis.Thresholds(),
        timeout=2,
    )
    assert not report.passed
    assert report.reasons == [
        "prev answered none of the 2 requests: nothing to judge the canary against "
        "(check the request set, --model-name and that prev is reachable)"
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--webhook", "deploy=http://hooks"], "expected PHASE=URL with PHASE one of"),
        (["--gates-file", "GATES"], "each gate needs a name and a query"),
        (["--requests-file", "MISSING"], "No such file"),
    ],
)
def test_bad_run_options_are_usage_errors_before_anything_changes(
    cluster, tmp_path, extra, message
):
    api, kubeconfig = cluster
    gates_file = tmp_path / "gates.yaml"
    gates_file.write_text("- {name: no-query}\n")
    extra = [
        str(gates_file) if a == "GATES" else str(tmp_path / "missing.json") if a == "MISSING" else a
        for a in extra
    ]
    result = rollout_cli(kubeconfig, "run", "torch", "--storage-uri", NEW, *extra)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert api.patches == []


def test_a_refused_start_leaves_someone_elses_canary_alone(cluster):
    """A run whose first patch is refused changed nothing, so it rolls nothing back."""
    api, kubeconfig = cluster
    first = rollout_cli(
        kubeconfig, *FAST, "start", "torch", "--storage-uri", NEW, "--percent", "10",
        "--canary-name", "v2",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = rollout_cli(
        kubeconfig, *FAST, "run", "torch", "--storage-uri", OTHER, "--canary-name", "v2"
    )
    assert again.returncode == 1
    assert "already has a canary 'v2'" in again.stderr and "nothing was changed" in again.stderr
    assert standard.canary_names(stored(api)) == ["v2"]


def test_a_first_step_of_100_is_refused():
    from predictor.rollout import cli

    with pytest.raises(Exception, match="the first step cannot be 100"):
        cli.steps("100")
    assert cli.steps("0,100") == [0, 100]
