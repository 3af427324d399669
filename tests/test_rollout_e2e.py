"""`python -m predictor.rollout run` end to end: the fake Kubernetes API server with KServe
simulated (tests/fake_kube_api.py), and real predictor processes (`python -m predictor` on
127.0.0.1) standing in for the revisions (Knative mode) or the variants' Deployments (Standard
mode, reached through the API server's service proxy). The simulators map each STORAGE_URI to
one of them:

    pvc://models/doubler      the stable revision (bundled doubler)
    pvc://models/doubler-v2   a healthy canary (the same doubler process)
    pvc://models/tripler      answers wrong values (TorchScript, x * 3)
    pvc://models/failing      raises for inputs >= 3 (tests.rollout_models:FailingDoubler)
    pvc://models/slow         right answers, 300 ms each (tests.rollout_models:SlowDoubler)
    pvc://models/never-ready  no process: the revision never becomes ready
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from predictor.rollout import isvc as spec
from tests.fake_kube_api import (
    DEPLOYMENTS,
    HTTPROUTES,
    ISVC_COLLECTION,
    FakeKubeAPI,
    KServeSimulator,
    KServeStandardSimulator,
    kserve_webhook,
    rollout_cli,
)
from tests.isvc_schema import validate_isvc
from tests.rollout_models import (
    FailingDoubler,
    Multiply,
    SlowDoubler,
    save_state_dict,
    save_torchscript,
)
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ISVC_COLLECTION.format(namespace="ml")
STABLE, HEALTHY = "pvc://models/doubler", "pvc://models/doubler-v2"
WRONG, FAILING, SLOW = "pvc://models/tripler", "pvc://models/failing", "pvc://models/slow"
NEVER_READY = "pvc://models/never-ready"
FAST = ["--interval", "0s", "--rounds", "3", "--timeout", "20s"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """STORAGE_URI -> URL of a real predictor process, all started at once."""
    models = tmp_path_factory.mktemp("rollout-models")
    processes = {
        STABLE: PredictorProcess(),
        WRONG: PredictorProcess(save_torchscript(Multiply(3.0), models / "tripler")),
        FAILING: PredictorProcess(
            save_state_dict(FailingDoubler(), models / "failing"),
            extra_args=["--model_class", "tests.rollout_models:FailingDoubler"],
        ),
        SLOW: PredictorProcess(
            save_state_dict(SlowDoubler(), models / "slow"),
            extra_args=["--model_class", "tests.rollout_models:SlowDoubler"],
        ),
    }
    with ThreadPoolExecutor(len(processes)) as pool, ExitStack() as stack:
        stack.callback(lambda: list(pool.map(lambda p: p.stop(), processes.values())))
        list(pool.map(lambda p: p.start(), processes.values()))
        urls = {uri: process.http_url for uri, process in processes.items()}
        # Two CPUs start four predictors in tens of seconds already: the healthy canary's
        # revision is served by the stable revision's process.
        yield {**urls, HEALTHY: urls[STABLE]}


def inference_service() -> dict:
    isvc = yaml.safe_load((ROOT / "manifests/base/inferenceservice.yaml").read_text())
    isvc["metadata"].update(name="torch", namespace="ml")
    isvc["spec"]["predictor"]["containers"][0]["env"].append(
        {"name": "STORAGE_URI", "value": STABLE}
    )
    return isvc


@pytest.fixture
def cluster(request, backends, tmp_path):
    """(api, kubeconfig, extra CLI args): `torch` serving STABLE at 100%.

    `tag-urls`: the tag URLs in the status are the predictors' own; `ingress`: they are Knative
    host names, reached through a Host-routing proxy with `--ingress`."""
    ingress = getattr(request, "param", "tag-urls") == "ingress"
    with FakeKubeAPI(validator=validate_isvc) as api:
        kserve = KServeSimulator(api, backends, tag_hosts=ingress)
        api.create(COLLECTION, inference_service())
        kserve.reconcile(COLLECTION, "torch")
        args = ["--ingress", kserve.ingress_url] if ingress else []
        try:
            yield api, api.kubeconfig(tmp_path / "kubeconfig", namespace="ml"), args
        finally:
            kserve.close()
        assert api.errors == []


def latest_percents(api: FakeKubeAPI) -> list[tuple[str, int]]:
    """(model of the latest revision, its percent) in each status the controller wrote for the
    spec it had (not the stale status stored with a new spec)."""
    seen = []
    for _, _, _, obj in api.events:
        status = obj.get("status") or {}
        entry = spec.traffic_entry(obj, latest=True)
        if entry and status.get("observedGeneration") == obj["metadata"]["generation"]:
            step = (spec.model_of(obj["spec"]["predictor"])["storageUri"], entry["percent"])
            if not seen or seen[-1] != step:
                seen.append(step)
    return seen


@pytest.mark.parametrize("cluster", ["tag-urls", "ingress"], indirect=True)
def test_healthy_canary_is_promoted_through_every_step(cluster):
    api, kubeconfig, args = cluster
    result = rollout_cli(
        kubeconfig,
        "run",
        "torch",
        "--storage-uri",
        HEALTHY,
        "--steps",
        "10,25,50,100",
        *FAST,
        *args,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("analysis passed") == 3
    assert "[step 4/4] 100%" in result.stdout
    assert "promoted" in result.stdout
    if args:
        assert "Host latest-torch-predictor.ml.example.com" in result.stdout

    obj = api.get(COLLECTION, "torch")
    assert spec.model_of(obj["spec"]["predictor"])["storageUri"] == HEALTHY
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert spec.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"]["annotations"]
    component = obj["status"]["components"]["predictor"]
    assert component["latestRolledoutRevision"] == "torch-predictor-00002"
    assert component["previousRolledoutRevision"] == "torch-predictor-00001"
    assert [(t["revisionName"], t["percent"]) for t in component["traffic"]] == [
        ("torch-predictor-00002", 100)
    ]
    assert latest_percents(api) == [
        (STABLE, 100),
        (HEALTHY, 10),
        (HEALTHY, 25),
        (HEALTHY, 50),
        (HEALTHY, 100),
    ]


@pytest.mark.parametrize(
    "canary, reason",
    [
        (WRONG, "6 of 6 answers differ from prev"),
        (FAILING, "error rate 100% above 0%"),
        (SLOW, "p95 latency"),
        (NEVER_READY, "timed out after 3s"),
    ],
    ids=["wrong-answers", "errors", "slow", "never-ready"],
)
def test_bad_canary_is_rolled_back_at_the_first_step(cluster, canary, reason):
    api, kubeconfig, args = cluster
    before = api.get(COLLECTION, "torch")
    result = rollout_cli(
        kubeconfig, "run", "torch", "--storage-uri", canary, *FAST, "--timeout", "3s", *args
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stderr
    assert "rolled back" in result.stderr
    assert "[step 1/4] 10%" in result.stdout
    assert "[step 2/4]" not in result.stdout

    obj = api.get(COLLECTION, "torch")
    assert obj["spec"] == before["spec"]
    assert spec.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"]["annotations"]
    assert spec.is_ready(obj)
    component = obj["status"]["components"]["predictor"]
    assert component["latestRolledoutRevision"] == component["latestCreatedRevision"]
    assert [t["percent"] for t in component["traffic"]] == [100]
    # The bad canary never got more than the first step.
    assert max((p for model, p in latest_percents(api) if model == canary), default=0) <= 10
    assert latest_percents(api)[-1] == (STABLE, 100)


def test_requests_file_and_json_status(cluster, tmp_path):
    """A custom request set that the failing canary answers right passes analysis."""
    api, kubeconfig, args = cluster
    requests_file = tmp_path / "requests.json"
    requests_file.write_text(json.dumps([{"protocol": "v1", "body": {"instances": [1.0, 2.0]}}]))
    result = rollout_cli(
        kubeconfig,
        "run",
        "torch",
        "--storage-uri",
        FAILING,
        "--steps",
        "20",
        *FAST,
        *args,
        "--requests-file",
        str(requests_file),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "canary left at 20%" in result.stdout
    status = json.loads(rollout_cli(kubeconfig, "status", "torch", "-o", "json").stdout)
    assert status["canaryTrafficPercent"] == 20
    assert status["rolloutInProgress"] is True
    assert [(t["tag"], t["percent"]) for t in status["traffic"]] == [("latest", 20), ("prev", 80)]


# --- Standard mode: spec.canary, each variant its own Deployment and Service -------------------


@pytest.fixture
def standard_cluster(backends, tmp_path):
    """(api, kubeconfig): `torch` in Standard mode serving STABLE; writes are checked against
    the schema and KServe's canary webhook rules."""
    isvc = inference_service()
    isvc["metadata"]["annotations"][spec.DEPLOYMENT_MODE_ANNOTATION] = "Standard"
    with FakeKubeAPI(validator=lambda o: validate_isvc(o) + kserve_webhook(o)) as api:
        kserve = KServeStandardSimulator(api, backends)
        api.create(COLLECTION, isvc)
        kserve.reconcile(COLLECTION, "torch")
        yield api, api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        assert api.errors == []


def canary_percents(api: FakeKubeAPI) -> list[int]:
    """The canary's weight in each HTTPRoute the controller wrote."""
    seen: list[int] = []
    for _, collection, _, obj in api.events:
        if collection == HTTPROUTES.format(namespace="ml"):
            refs = obj["spec"]["rules"][0]["backendRefs"]
            percent = sum(ref["weight"] for ref in refs[1:])
            if not seen or seen[-1] != percent:
                seen.append(percent)
    return seen


def test_standard_mode_healthy_canary_is_promoted_through_every_step(standard_cluster):
    api, kubeconfig = standard_cluster
    result = rollout_cli(
        kubeconfig, "run", "torch", "--storage-uri", HEALTHY, "--steps", "10,25,50,100",
        "--canary-name", "v2", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("analysis passed") == 3
    assert "services/torch-v2-predictor:80/proxy and prev" in result.stdout
    assert "promoted: ml/torch serves canary 'v2'" in result.stdout
    # Analysis went through the API server's service proxy to both variants' Services.
    assert {service for service, _ in api.proxied} == {"torch-predictor", "torch-v2-predictor"}
    obj = api.get(COLLECTION, "torch")
    assert obj["spec"]["predictor"]["name"] == "v2"
    assert spec.model_of(obj["spec"]["predictor"])["storageUri"] == HEALTHY
    assert "canary" not in obj["spec"]
    assert [d["metadata"]["name"] for d in api.list(DEPLOYMENTS.format(namespace="ml"))] == [
        "torch-v2-predictor"
    ]
    assert canary_percents(api) == [0, 10, 25, 50, 0]


@pytest.mark.parametrize(
    "canary, reason",
    [
        (WRONG, "6 of 6 answers differ from prev"),
        (FAILING, "error rate 100% above 0%"),
        (SLOW, "p95 latency"),
        (NEVER_READY, "timed out after 3s"),
    ],
    ids=["wrong-answers", "errors", "slow", "never-ready"],
)
def test_standard_mode_bad_canary_is_rolled_back_at_the_first_step(
    standard_cluster, canary, reason
):
    api, kubeconfig = standard_cluster
    before = api.get(COLLECTION, "torch")
    result = rollout_cli(
        kubeconfig, "run", "torch", "--storage-uri", canary, *FAST, "--timeout", "3s"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stderr
    assert "rolled back" in result.stderr
    assert "[step 2/4]" not in result.stdout
    obj = api.get(COLLECTION, "torch")
    assert obj["spec"] == before["spec"]
    assert spec.is_ready(obj)
    assert "canaryStatuses" not in obj["status"]
    assert [d["metadata"]["name"] for d in api.list(DEPLOYMENTS.format(namespace="ml"))] == [
        "torch-predictor"
    ]
    assert max(canary_percents(api)) <= 10
    assert canary_percents(api)[-1] == 0
