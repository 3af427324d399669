"""Terraform: every file parses, and the properties that matter hold (offline)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "terraform"
STAGES = ["01-cluster", "02-kserve-deps", "03-kserve"]
TF_FILES = sorted(TF.rglob("*.tf"))
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)


def load(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=OPTIONS)


def blocks(kind: str, stage: str | None = None) -> list[dict]:
    """All top-level blocks of a kind (resource, variable, ...) of one stage or of all."""
    files = TF_FILES if stage is None else sorted((TF / stage).glob("*.tf"))
    return [block for path in files for block in load(path).get(kind, [])]


def resources(rtype: str, stage: str | None = None) -> dict[str, dict]:
    found = {}
    for block in blocks("resource", stage):
        for name, body in block.get(rtype, {}).items():
            found[name] = body
    return found


def variable_defaults(stage: str) -> dict:
    out = {}
    for block in blocks("variable", stage):
        for name, body in block.items():
            out[name] = body.get("default")
    return out


def resolve(value: str, stage: str) -> str:
    """Substitutes ${var.x} with the variable's default."""
    defaults = variable_defaults(stage)
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(defaults[m.group(1)]), value)


def test_stages_are_laid_out_like_the_module_examples():
    for stage in STAGES:
        names = {p.name for p in (TF / stage).iterdir()}
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf", "backend.tf"} <= names
        assert "backend.hcl.example" in names
        backend = load(TF / stage / "backend.tf")["terraform"][0]["backend"][0]
        assert "gcs" in backend


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF)))
def test_every_tf_file_parses(path):
    assert load(path), f"{path} is empty"


@pytest.mark.parametrize("stage", STAGES)
def test_variables_have_types_descriptions_and_validation(stage):
    variables = [(name, body) for b in blocks("variable", stage) for name, body in b.items()]
    assert variables
    for name, body in variables:
        assert "type" in body and body.get("description"), name
        if body["type"] != "bool":
            assert body.get("validation"), f"{stage}: variable {name} has no validation"


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_and_providers_are_pinned(stage):
    terraform = load(TF / stage / "versions.tf")["terraform"][0]
    assert re.search(r"<\s*2", terraform["required_version"])
    providers = terraform["required_providers"][0]
    assert providers
    for name, spec in providers.items():
        assert spec["source"].startswith("hashicorp/"), name
        assert re.match(r"^~> \d+\.\d+$", spec["version"]), f"{name}: {spec['version']}"


def test_every_helm_release_is_pinned_to_an_exact_version():
    releases = {}
    for stage in STAGES:
        for name, body in resources("helm_release", stage).items():
            releases[name] = resolve(body["version"], stage)
    charts = {name: body["chart"] for name, body in resources("helm_release").items()}
    assert set(charts.values()) >= {
        "cert-manager",
        "istiod",
        "knative-operator",
        "kserve-crd",
        "kserve-resources",
    }
    for name, version in releases.items():
        assert EXACT_VERSION.match(version), f"helm_release.{name} version {version!r}"


def test_kserve_is_installed_in_documented_order_and_knative_mode():
    deps = resources("helm_release", "02-kserve-deps")
    order = ["cert_manager", "istio_base", "istiod", "istio_ingressgateway"]
    order += ["knative_operator", "kserve_crd"]
    for before, after in zip(order, order[1:], strict=False):
        assert deps[after]["depends_on"] == [f"${{helm_release.{before}}}"], after
    assert deps["kserve_crd"]["repository"] == "oci://ghcr.io/kserve/charts"

    kserve = resources("helm_release", "03-kserve")["kserve"]
    assert kserve["chart"] == "kserve-resources"
    assert {"name": "kserve.controller.deploymentMode", "value": "Knative"} in kserve["set"]
    assert kserve["depends_on"] == ["${kubernetes_manifest.knative_serving}"]
    stage2 = variable_defaults("02-kserve-deps")["kserve_version"]
    assert variable_defaults("03-kserve")["kserve_version"] == stage2


def test_cluster_has_workload_identity_release_channel_and_shielded_nodes():
    cluster = resources("google_container_cluster")["primary"]
    assert cluster["workload_identity_config"][0]["workload_pool"] == "${local.workload_pool}"
    local_values = {k: v for b in blocks("locals", "01-cluster") for k, v in b.items()}
    assert local_values["workload_pool"] == "${var.project_id}.svc.id.goog"
    assert cluster["release_channel"][0]["channel"] == "${var.release_channel}"
    assert cluster["enable_shielded_nodes"] is True
    assert cluster["remove_default_node_pool"] is True
    assert cluster["private_cluster_config"][0]["enable_private_nodes"] is True


def test_node_pools_autoscale_use_gke_metadata_and_gpu_is_optional():
    pools = resources("google_container_node_pool")
    assert set(pools) == {"cpu", "gpu"}
    assert pools["gpu"]["count"] == "${var.gpu_pool.enabled ? 1 : 0}"
    assert pools["gpu"]["node_config"][0]["guest_accelerator"]
    for name, pool in pools.items():
        assert pool["autoscaling"], name
        config = pool["node_config"][0]
        assert config["workload_metadata_config"][0]["mode"] == "GKE_METADATA", name
        assert config["shielded_instance_config"][0]["enable_secure_boot"] is True, name


def test_no_service_account_keys_anywhere():
    types = {rtype for block in blocks("resource") for rtype in block}
    types |= {dtype for block in blocks("data") for dtype in block}
    assert "google_service_account_key" not in types
    assert "google_container_cluster" in types  # the walk above sees the resources
    for block in blocks("provider"):
        for name, body in block.items():
            assert "credentials" not in body, f"provider {name} reads a key file"


def test_predictor_only_reads_the_model_bucket():
    members = {
        f"{rtype}.{name}": body
        for block in blocks("resource")
        for rtype, named in block.items()
        for name, body in named.items()
        if body.get("member") == "${google_service_account.predictor.member}"
    }
    assert members == {
        "google_storage_bucket_iam_member.predictor_read": {
            "bucket": "${google_storage_bucket.models.name}",
            "role": "roles/storage.objectViewer",
            "member": "${google_service_account.predictor.member}",
        }
    }
    binding = resources("google_service_account_iam_member")["predictor_workload_identity"]
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"] == (
        "serviceAccount:${local.workload_pool}"
        "[${var.predictor_namespace}/${var.predictor_service_account}]"
    )
    bucket = resources("google_storage_bucket")["models"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"


def test_github_federation_is_restricted_to_the_repository():
    provider = resources("google_iam_workload_identity_pool_provider")["github"]
    assert provider["oidc"][0]["issuer_uri"] == "https://token.actions.githubusercontent.com"
    condition = provider["attribute_condition"]
    assert "assertion.repository == '${var.github_repository}'" in condition
    assert "assertion.sub == 'repo:${var.github_repository}:ref:refs/heads/main'" in condition
    bindings = resources("google_service_account_iam_member")
    for name in ("deployer_wif", "terraform_wif"):
        assert bindings[name]["member"].startswith("principal://iam.googleapis.com/"), name
        assert "/subject/" in bindings[name]["member"], name


def test_deployer_has_only_push_and_kubernetes_roles():
    deployer = "${google_service_account.deployer.member}"
    roles = sorted(
        body["role"]
        for block in blocks("resource")
        for named in block.values()
        for body in named.values()
        if body.get("member") == deployer
    )
    assert roles == ["roles/artifactregistry.writer", "roles/container.developer"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_fmt():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def checkov_binary() -> str:
    return os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")


def run_checkov(*args: str) -> list[dict]:
    """Runs checkov offline; returns one report per framework."""
    binary = checkov_binary()
    if not Path(binary).exists() and shutil.which(binary) is None:
        pytest.skip(f"checkov not found at {binary} (make test installs it)")
    result = subprocess.run(
        [binary, *args, "--output", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def failed_checks(reports: list[dict]) -> list[str]:
    return [
        f"{c['check_id']} {c['resource']} {c['file_path']}:{c['file_line_range']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]


@pytest.fixture(scope="module")
def checkov_terraform():
    return run_checkov("--directory", "terraform", "--framework", "terraform")


def test_checkov_terraform_has_no_failed_checks(checkov_terraform):
    assert checkov_terraform[0]["summary"]["passed"] > 50
    assert failed_checks(checkov_terraform) == []


def test_checkov_skips_sit_next_to_what_they_skip_with_a_reason():
    skip = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+)(.*)")
    for path in TF_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = skip.search(line)
            if match:
                assert len(match.group(2).lstrip(":").strip()) > 20, f"{path}:{i + 1} no reason"
                assert lines[i - 1].startswith("resource "), f"{path}:{i + 1} not in a resource"
