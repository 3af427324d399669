"""GitHub Actions workflows: actionlint, schema, SHA pins, permissions and deploy concurrency."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_terraform import failed_checks, run_checkov

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
ACTIONS = sorted((GITHUB / "actions").glob("*/action.yml"))
BIN = Path(sys.executable).parent
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*\S+@[0-9a-f]{40}\s+#\s*v\d+\.\d+\.\d+\s*$")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def steps_of(path: Path) -> list[dict]:
    doc = load(path)
    if "jobs" in doc:
        return [step for job in doc["jobs"].values() for step in job.get("steps", [])]
    return doc["runs"].get("steps", [])


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (make test installs it)")
    return str(path)


def test_the_expected_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {
        "ci.yml",
        "deliver.yml",
        "rollback.yml",
        "terraform.yml",
    }


def test_actionlint():
    if shutil.which("shellcheck") is None:
        print("shellcheck not on PATH: actionlint runs without checking run: scripts")
    result = subprocess.run(
        [tool("actionlint"), "-no-color"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not on PATH")
def test_actionlint_reports_shellcheck_findings(tmp_path):
    """Guards the test above: with shellcheck present, a bad run: script must be caught."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo $UNQUOTED_VAR\n"
    )
    result = subprocess.run(
        [tool("actionlint"), "-no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "shellcheck" in result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not on PATH")
def test_shell_scripts_pass_shellcheck():
    """The repository's own scripts (CI entry, benchmark and GPU-run scripts)."""
    scripts = [ROOT / ".ci" / "run", *sorted((ROOT / "benchmarks").glob("*.sh"))]
    assert len(scripts) >= 3
    result = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_schemas():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", *ACTIONS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS + ACTIONS, ids=lambda p: p.parent.name + "/" + p.name)
def test_every_action_is_pinned_to_a_full_sha_with_its_version(path):
    uses = [step["uses"] for step in steps_of(path) if "uses" in step]
    assert uses
    for ref in uses:
        if ref.startswith("./"):
            assert (ROOT / ref / "action.yml").exists(), ref
            continue
        assert SHA_PIN.match(ref), f"{path.name}: {ref} is not pinned to a commit SHA"
    for line in path.read_text().splitlines():
        if re.search(r"uses:\s*[A-Za-z0-9]", line):
            assert VERSION_COMMENT.search(line), f"{path.name}: no version comment: {line}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_permissions(path):
    doc = load(path)
    assert doc["permissions"] == {"contents": "read"}
    for name, job in doc["jobs"].items():
        permissions = job.get("permissions", {})
        assert set(permissions.values()) <= {"read", "write", "none"}, name
        writes = {scope for scope, level in permissions.items() if level == "write"}
        # Only the image build attests (provenance and SBOM go to GitHub's attestation store).
        allowed = (
            {"id-token", "attestations"}
            if (path.name, name) == ("deliver.yml", "build")
            else {"id-token"}
        )
        assert writes <= allowed, f"{path.name}/{name} writes {writes}"


def test_no_json_keys_in_workflows():
    for path in WORKFLOWS + ACTIONS:
        for step in steps_of(path):
            assert "credentials_json" not in step.get("with", {}), path.name
            if "google-github-actions/auth@" in step.get("uses", ""):
                assert "workload_identity_provider" in step["with"], path.name


def rollout_jobs() -> list[tuple[str, str, dict]]:
    """Jobs that change the InferenceService (rollout CLI or helm upgrade)."""
    found = []
    for path in WORKFLOWS:
        doc = load(path)
        for name, job in doc["jobs"].items():
            scripts = " ".join(step.get("run", "") for step in job.get("steps", []))
            if "predictor.rollout" in scripts and re.search(r"(start|promote|rollback) ", scripts):
                found.append((path.name, name, job))
    return found


def test_deploy_jobs_cannot_be_cancelled_mid_rollout():
    jobs = rollout_jobs()
    assert {(f, n) for f, n, _ in jobs} == {
        ("deliver.yml", "canary"),
        ("deliver.yml", "promote"),
        ("rollback.yml", "rollback"),
    }
    groups = set()
    for path_name, name, job in jobs:
        concurrency = job["concurrency"]
        assert concurrency["cancel-in-progress"] is False, f"{path_name}/{name}"
        groups.add(concurrency["group"])
        workflow_concurrency = load(GITHUB / "workflows" / path_name).get("concurrency")
        if workflow_concurrency:
            assert workflow_concurrency["cancel-in-progress"] is False
        # The job outlives the CLI's own --timeout 600s.
        assert job["timeout-minutes"] > 10
    assert len(groups) == 1, "all rollouts of the InferenceService share one group"


def test_delivery_pipeline_shape():
    doc = load(GITHUB / "workflows" / "deliver.yml")
    jobs = doc["jobs"]
    assert doc["on"]["push"]["branches"] == ["main"]
    assert jobs["canary"]["needs"] == "build" and jobs["promote"]["needs"] == "canary"
    assert jobs["promote"]["environment"] == "production"
    assert "CANARY_PERCENT" in jobs["canary"]["env"]
    assert "vars.CANARY_PERCENT" in jobs["canary"]["env"]["CANARY_PERCENT"]
    assert jobs["build"]["env"]["IMAGE"] == "${{ vars.IMAGE_REPOSITORY }}:${{ github.sha }}"
    canary_steps = jobs["canary"]["steps"]
    # One smoke test per deployment mode: Knative through the tag URL on the gateway, Standard
    # through the API server's service proxy to the canary's own Service.
    smokes = {s["if"]: s for s in canary_steps if "smoke_test.py" in s.get("run", "") and "if" in s}
    assert set(smokes) == {
        "steps.mode.outputs.deployment-mode == 'Knative'",
        "steps.mode.outputs.deployment-mode == 'Standard'",
    }
    knative = smokes["steps.mode.outputs.deployment-mode == 'Knative'"]
    standard = smokes["steps.mode.outputs.deployment-mode == 'Standard'"]
    assert "latest-" in knative["run"] and "--ingress" in knative["run"]
    assert '--service-proxy "$NAMESPACE/$SERVICE:80"' in standard["run"]
    assert standard["env"]["SERVICE"] == "${{ steps.variant.outputs.service }}"
    rollback = next(s for s in canary_steps if " rollback " in s.get("run", ""))
    assert rollback["if"].startswith("failure()")
    assert canary_steps.index(rollback) > max(map(canary_steps.index, smokes.values()))
    assert "workflow_dispatch" in load(GITHUB / "workflows" / "rollback.yml")["on"]


def test_terraform_workflow_plans_on_prs_and_applies_gated():
    doc = load(GITHUB / "workflows" / "terraform.yml")
    assert doc["on"]["pull_request"]["paths"][0] == "terraform/**"
    assert doc["concurrency"] == {"group": "terraform-state", "cancel-in-progress": False}
    plan, apply = doc["jobs"]["plan"], doc["jobs"]["apply"]
    assert any("upload-artifact" in s.get("uses", "") for s in plan["steps"])
    assert "tfplan" in " ".join(s.get("run", "") for s in plan["steps"])
    assert apply["environment"] == "terraform"
    assert "refs/heads/main" in apply["if"]


def test_ci_runs_lint_and_the_readme_test_command():
    doc = load(GITHUB / "workflows" / "ci.yml")
    assert {"pull_request", "push"} <= set(doc["on"])
    runs = {
        name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in doc["jobs"].items()
    }
    assert "make lint" in runs["lint"]
    assert "./.ci/run" in runs["test"]
    assert "terraform validate" in runs["terraform-validate"]


def test_smoke_test_script_fails_without_a_server():
    result = subprocess.run(
        [
            sys.executable,
            str(GITHUB / "scripts" / "smoke_test.py"),
            "--ingress=http://127.0.0.1:9",
            "--host=x.example.com",
            "--model=m",
            "--attempts=1",
            "--timeout=2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "FAILED" in result.stderr


def test_checkov_github_actions_has_no_failed_checks():
    reports = run_checkov("--directory", ".github", "--framework", "github_actions")
    assert sum(r["summary"]["passed"] for r in reports) > 100
    assert failed_checks(reports) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_artifact_carries_a_terraform_plan_file(path):
    """A binary plan holds provider credentials in clear text; only plan.txt may leave."""
    for step in steps_of(path):
        if "upload-artifact" not in step.get("uses", ""):
            continue
        paths = str(step.get("with", {}).get("path", "")).split()
        assert paths, step
        for uploaded in paths:
            assert uploaded.endswith(".txt") or "tfplan" not in uploaded, uploaded


def step_index(steps: list[dict], needle: str) -> int:
    """Index of the one step whose `uses` or `run` contains needle."""
    found = [i for i, s in enumerate(steps) if needle in s.get("uses", "") + s.get("run", "")]
    assert len(found) == 1, (needle, found)
    return found[0]


def test_the_image_is_scanned_before_push_then_attested_signed_and_deployed_by_digest():
    jobs = load(GITHUB / "workflows" / "deliver.yml")["jobs"]
    steps = jobs["build"]["steps"]
    build, push = step_index(steps, "docker build"), step_index(steps, "docker push")
    scans = [i for i, s in enumerate(steps) if "trivy-action" in s.get("uses", "")]
    gate = next(i for i in scans if steps[i]["with"].get("exit-code") == "1")
    assert steps[gate]["with"]["severity"] == "CRITICAL"
    assert steps[gate]["with"]["ignore-unfixed"] is True
    sbom = next(i for i in scans if steps[i]["with"].get("format") == "spdx-json")
    assert build < gate < push, "nothing is pushed before the scan passes"
    # The pushed digest is recorded, and everything after signs or attests that digest.
    assert steps[push]["id"] == "push" and "digest=" in steps[push]["run"]
    digest = "${{ steps.push.outputs.digest }}"
    provenance = steps[step_index(steps, "actions/attest-build-provenance@")]
    assert provenance["with"]["subject-digest"] == digest
    assert provenance["with"]["push-to-registry"] is True
    sbom_attestation = steps[step_index(steps, "actions/attest-sbom@")]
    assert sbom_attestation["with"]["sbom-path"] == steps[sbom]["with"]["output"]
    assert sbom_attestation["with"]["subject-digest"] == digest
    sign = step_index(steps, "cosign sign")
    assert '--yes "$IMAGE_REPOSITORY@$DIGEST"' in steps[sign]["run"]
    assert steps[sign]["env"]["DIGEST"] == digest
    assert step_index(steps, "sigstore/cosign-installer@") < sign
    attest = step_index(steps, "binauthz attestations sign-and-create")
    assert '--artifact-url="$IMAGE_REPOSITORY@$DIGEST"' in steps[attest]["run"]
    assert push < min(sign, attest, step_index(steps, "actions/attest-build-provenance@"))
    assert jobs["build"]["outputs"]["image"] == "${{ steps.push.outputs.image }}"
    # The canary deploys repository:sha@sha256:..., never a bare tag.
    canary = jobs["canary"]
    assert canary["env"]["IMAGE"] == "${{ needs.build.outputs.image }}"
    assert canary["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    scripts = " ".join(s.get("run", "") for s in canary["steps"])
    assert '--set "image.digest=$DIGEST"' in scripts
    assert '--image "$IMAGE"' in scripts


def test_each_job_authenticates_as_its_own_account_in_its_own_environment():
    expected = {
        ("deliver.yml", "build"): ("vars.PUBLISHER_SA", None),
        ("deliver.yml", "canary"): ("vars.CANARY_SA", "canary"),
        ("deliver.yml", "promote"): ("vars.PROMOTER_SA", "production"),
        ("rollback.yml", "rollback"): ("vars.CANARY_SA", "canary"),
        ("terraform.yml", "plan"): ("vars.TERRAFORM_PLAN_SA", None),
        ("terraform.yml", "apply"): ("vars.TERRAFORM_SA", "terraform"),
    }
    found = {}
    for path in WORKFLOWS:
        for name, job in load(path)["jobs"].items():
            for step in job.get("steps", []):
                inputs = step.get("with", {})
                account = inputs.get("service_account") or inputs.get("service-account")
                if account:
                    found[(path.name, name)] = (account.strip("${} "), job.get("environment"))
    assert found == expected
    # Jobs that run without an environment never run on a branch other than main or a PR.
    plan = load(GITHUB / "workflows" / "terraform.yml")["jobs"]["plan"]
    assert plan["if"] == "github.event_name == 'pull_request'"


def test_pull_request_plans_cannot_lock_or_write_the_state():
    plan = load(GITHUB / "workflows" / "terraform.yml")["jobs"]["plan"]
    script = " ".join(s.get("run", "") for s in plan["steps"])
    assert "plan -lock=false" in script
    assert "apply" not in script


UNTRUSTED_CONTEXTS = re.compile(
    r"\$\{\{\s*github\.(event\.(issue|pull_request|comment|review|review_comment|pages|commits|head_commit)"
    r"[^}]*(title|body|message|name|email|label|ref|default_branch|page_name)|head_ref)"
)


@pytest.mark.parametrize("path", WORKFLOWS + ACTIONS, ids=lambda p: p.parent.name + "/" + p.name)
def test_no_dangerous_workflow_patterns(path):
    """Scorecard's Dangerous-Workflow and Token-Permissions checks, offline."""
    doc = load(path)
    triggers = doc.get("on", {}) if path.name != "action.yml" else {}
    assert "pull_request_target" not in triggers and "workflow_run" not in triggers
    for step in steps_of(path):
        script = step.get("run", "")
        # Attacker-controlled text interpolated into a shell script is code injection.
        assert not UNTRUSTED_CONTEXTS.search(script), f"{path.name}: {script[:80]}"
        assert not re.search(r"(curl|wget)[^|\n]*\|\s*(sudo\s+)?(ba)?sh", script), script[:80]
        if "actions/checkout@" in step.get("uses", ""):
            assert step.get("with", {}).get("persist-credentials") is False, path.name
    text = path.read_text()
    assert "write-all" not in text and "secrets.GITHUB_TOKEN" not in text


# ---------------------------------------------------------------- deployment modes
# The canary job's own shell steps, run here with fake helm, kubectl and python on PATH.


def canary_step(step_id: str) -> dict:
    steps = load(GITHUB / "workflows" / "deliver.yml")["jobs"]["canary"]["steps"]
    return next(s for s in steps if s.get("id") == step_id)


def run_step(step: dict, tmp_path: Path, fakes: dict[str, str], **env: str):
    """Runs a step's script as GitHub does (bash -e) with the job's env; returns the result,
    the step's outputs and what the fakes were asked (one line per call)."""
    assert "${{" not in step["run"], "the script reads its inputs from env only"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, script in fakes.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + script)
        path.chmod(0o755)
    output, log = tmp_path / "output", tmp_path / "calls"
    for path in (output, log):
        path.write_text("")
    job_env = {
        "NAMESPACE": "models",
        "ISVC_NAME": "torch-predictor",
        "MODEL_NAME": "m",
        "ROLLOUT_TIMEOUT": "600s",
        "ROLLOUT_RECORD": "rollout-record.json",
    }
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],  # GitHub's bash
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # the workspace
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
            "RUNNER_TEMP": str(tmp_path),
            "FAKE_LOG": str(log),
            **job_env,
            **env,
        },
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return result, outputs, log.read_text().splitlines()


FAKE_HELM = '[ "$FAKE_RELEASE" = yes ]\n'
FAKE_KUBECTL = """echo "$*" >> "$FAKE_LOG"
case "$*" in
  *"get configmap inferenceservice-config"*)
    [ -n "$FAKE_DEPLOY" ] || { echo 'forbidden' >&2; exit 1; }
    printf '%s' "$FAKE_DEPLOY" ;;
  *"{.status.deploymentMode}"*) printf '%s' "$FAKE_STATUS" ;;
  *"{.metadata.annotations"*) printf '%s' "$FAKE_ANNOTATION" ;;
  *) echo "unexpected kubectl $*" >&2; exit 2 ;;
esac
"""
CONFIGMAP_READ = "-n kserve get configmap inferenceservice-config -o jsonpath={.data.deploy}"


@pytest.mark.parametrize(
    ("release", "kserve_default", "status", "annotation", "expected"),
    [
        # First install: KServe's default for new InferenceServices, by either name.
        ("no", "Knative", "", "", "Knative"),
        ("no", "Serverless", "", "", "Knative"),
        ("no", "Standard", "", "", "Standard"),
        ("no", "RawDeployment", "", "", "Standard"),
        # Afterwards: what the controller reports, else the annotation; never the default.
        ("yes", "Knative", "Standard", "", "Standard"),
        ("yes", "Standard", "Knative", "", "Knative"),
        ("yes", "Knative", "", "RawDeployment", "Standard"),
    ],
)
def test_canary_job_reads_the_deployment_mode_from_the_cluster(
    tmp_path, release, kserve_default, status, annotation, expected
):
    result, outputs, calls = run_step(
        canary_step("mode"),
        tmp_path,
        {"helm": FAKE_HELM, "kubectl": FAKE_KUBECTL},
        FAKE_RELEASE=release,
        FAKE_DEPLOY=json.dumps({"defaultDeploymentMode": kserve_default}),
        FAKE_STATUS=status,
        FAKE_ANNOTATION=annotation,
        STORAGE_URI="gs://bucket/model",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {
        "mode": "install" if release == "no" else "canary",
        "deployment-mode": expected,
    }
    assert (CONFIGMAP_READ in calls) == (release == "no"), calls
    assert "::warning::" not in result.stdout


def test_canary_job_stops_on_a_mode_without_canaries_or_an_unreadable_default(tmp_path):
    fakes = {"helm": FAKE_HELM, "kubectl": FAKE_KUBECTL}
    step = canary_step("mode")
    result, outputs, _ = run_step(
        step, tmp_path, fakes, FAKE_RELEASE="yes", FAKE_STATUS="ModelMesh"
    )
    assert result.returncode != 0 and "::error::" in result.stdout and not outputs
    result, outputs, _ = run_step(step, tmp_path, fakes, FAKE_RELEASE="no", FAKE_DEPLOY="")
    assert result.returncode != 0 and not outputs
    # Standard without a storage URI installs, and says canaries will need one.
    deploy = json.dumps({"defaultDeploymentMode": "Standard"})
    result, outputs, _ = run_step(step, tmp_path, fakes, FAKE_RELEASE="no", FAKE_DEPLOY=deploy)
    assert result.returncode == 0 and outputs["deployment-mode"] == "Standard"
    assert "::warning::" in result.stdout and "MODEL_STORAGE_URI" in result.stdout


def test_first_install_tells_the_chart_the_mode_and_only_canaries_use_the_rollout_cli():
    steps = load(GITHUB / "workflows" / "deliver.yml")["jobs"]["canary"]["steps"]
    install = next(s for s in steps if "helm upgrade --install" in s.get("run", ""))
    assert install["if"] == "steps.mode.outputs.mode == 'install'"
    assert install["env"]["DEPLOYMENT_MODE"] == "${{ steps.mode.outputs.deployment-mode }}"
    assert '--set "deploymentMode=$DEPLOYMENT_MODE"' in install["run"]
    start = canary_step("start")
    assert start["if"] == "steps.mode.outputs.mode == 'canary'"
    # One command for both modes: the CLI finds the mode on the InferenceService. `run`
    # starts the canary itself; a `start` before it would make it refuse the same image.
    assert "deployment-mode" not in start["if"] and 'run "$ISVC_NAME"' in start["run"]
    assert " start " not in start["run"]


STATUS = {
    "name": "torch-predictor",
    "deploymentMode": "Standard",
    "stable": {"name": "", "service": "torch-predictor-predictor", "model": {"image": "r:1@a"}},
    "canaries": [
        {"name": "old", "service": "torch-predictor-old-predictor", "model": {"image": "r:0@z"}},
        {
            "name": "sha-0123456789ab",
            "service": "torch-predictor-sha-0123456789ab-predictor",
            "model": {"image": "r:2@sha256:0123456789ab"},
        },
    ],
}
FAKE_PYTHON = 'echo "$*" >> "$FAKE_LOG"\ncat "$FAKE_STATUS_JSON"\n'


@pytest.mark.parametrize(
    ("mode", "image", "expected"),
    [
        (
            "canary",
            "r:2@sha256:0123456789ab",
            {
                "service": "torch-predictor-sha-0123456789ab-predictor",
                "canary-name": "sha-0123456789ab",
            },
        ),
        ("install", "r:1@a", {"service": "torch-predictor-predictor"}),
    ],
)
def test_standard_mode_smoke_test_targets_the_service_that_serves_the_new_image(
    tmp_path, mode, image, expected
):
    status = tmp_path / "status.json"
    status.write_text(json.dumps(STATUS))
    step = canary_step("variant")
    assert step["if"] == "steps.mode.outputs.deployment-mode == 'Standard'"
    result, outputs, calls = run_step(
        step,
        tmp_path,
        {"python": FAKE_PYTHON},
        MODE=mode,
        IMAGE=image,
        FAKE_STATUS_JSON=str(status),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == expected
    assert calls == ["-m predictor.rollout -n models status torch-predictor -o json"]
    # A canary serving another image is never tested in its place.
    result, outputs, _ = run_step(
        step,
        tmp_path,
        {"python": FAKE_PYTHON},
        MODE="canary",
        IMAGE="r:3@x",
        FAKE_STATUS_JSON=str(status),
    )
    assert result.returncode != 0 and "::error::" in result.stdout and not outputs


def test_promotion_and_rollbacks_are_one_command_in_either_mode(tmp_path):
    jobs = load(GITHUB / "workflows" / "deliver.yml")["jobs"]
    assert jobs["canary"]["outputs"]["canary-name"] == "${{ steps.variant.outputs.canary-name }}"
    promote = next(s for s in jobs["promote"]["steps"] if "promote" in s.get("run", ""))
    assert promote["env"]["CANARY_NAME"] == "${{ needs.canary.outputs.canary-name }}"
    rollback = next(s for s in jobs["canary"]["steps"] if " rollback " in s.get("run", ""))
    assert rollback["env"]["CANARY_NAME"] == "${{ steps.variant.outputs.canary-name }}"
    status = tmp_path / "status.json"
    status.write_text(json.dumps(STATUS))
    fakes = {
        "python": 'echo "$*" >> "$FAKE_LOG"\n'
        'case "$*" in *" status "*) cat "$FAKE_STATUS_JSON" ;; esac\n',
        "kubectl": 'echo "kubectl $*" >> "$FAKE_LOG"\n',
    }
    cli = "-m predictor.rollout -n models --timeout 600s"
    for step, command in ((promote, "promote"), (rollback, "rollback")):
        assert "deployment-mode" not in step.get("if", "")
        # Knative mode (no canary name): the plain command; Standard: this run's canary.
        for name, extra in (("", ""), ("sha-0123456789ab", " --canary-name sha-0123456789ab")):
            result, _, calls = run_step(
                step, tmp_path, fakes, CANARY_NAME=name, FAKE_STATUS_JSON=str(status)
            )
            assert result.returncode == 0, result.stderr
            commands = [c for c in calls if " status " not in c]
            assert commands[0] == f"{cli} {command} torch-predictor{extra}"
    manual = load(GITHUB / "workflows" / "rollback.yml")["jobs"]["rollback"]
    script = " ".join(s.get("run", "") for s in manual["steps"])
    assert "predictor.rollout" in script and " rollback " in script
    assert "latest-" not in script and "istio" not in script


def test_terraform_workflow_passes_the_deployment_mode_to_the_stages():
    env = load(GITHUB / "workflows" / "terraform.yml")["env"]
    assert env["TF_VAR_kserve_deployment_mode"] == "${{ vars.KSERVE_DEPLOYMENT_MODE || 'Knative' }}"
    assert env["TF_VAR_gateway_api_channel"] == (
        "${{ vars.KSERVE_DEPLOYMENT_MODE == 'Standard' && 'CHANNEL_STANDARD' || '' }}"
    )


FAKE_PROXY_KUBECTL = """echo "$*" >> "$FAKE_LOG"
[ -z "$FAKE_FAIL" ] || { echo "$FAKE_FAIL" >&2; exit 1; }
case "$1 $2" in
  "get --raw") echo '{"name": "m", "ready": true}' ;;
  "create --raw")
    body=$(cat "$5")
    case "$3" in
      *:predict) echo "{\\"predictions\\": [2.0, ${FAKE_SECOND:-4.0}], \\"sent\\": $body}" ;;
      */infer) echo "{\\"outputs\\": [{\\"data\\": [2.0, ${FAKE_SECOND:-4.0}]}]}" ;;
    esac ;;
  *) exit 2 ;;
esac
"""


def proxy_smoke(tmp_path: Path, **env: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text("#!/bin/bash\n" + FAKE_PROXY_KUBECTL)
    kubectl.chmod(0o755)
    log = tmp_path / "calls"
    log.write_text("")
    result = subprocess.run(
        [
            sys.executable,
            str(GITHUB / "scripts" / "smoke_test.py"),
            "--service-proxy=models/torch-predictor-c1-predictor:80",
            "--model=m",
            "--expect=2,4",
            "--attempts=1",
            "--timeout=5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), **env},
    )
    return result, log.read_text().splitlines()


def test_smoke_test_through_the_service_proxy_gets_and_posts_with_kubectl(tmp_path):
    result, calls = proxy_smoke(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "v1: ok [2.0, 4.0]" in result.stdout and "v2: ok [2.0, 4.0]" in result.stdout
    proxy = "/api/v1/namespaces/models/services/torch-predictor-c1-predictor:80/proxy"
    assert [c.split(" -f ")[0] for c in calls] == [
        f"get --raw {proxy}/v1/models/m --request-timeout=5s",
        f"create --raw {proxy}/v1/models/m:predict",
        f"create --raw {proxy}/v2/models/m/infer",
    ]
    assert all(c.endswith("--request-timeout=5s") for c in calls)


def test_smoke_test_through_the_service_proxy_fails_on_wrong_answers_or_refusals(tmp_path):
    result, _ = proxy_smoke(tmp_path, FAKE_SECOND="5.0")
    assert result.returncode == 1
    assert "FAILED: v1: expected [2.0, 4.0], got [2.0, 5.0]" in result.stderr
    forbidden = 'services "torch-predictor-c1-predictor" is forbidden: cannot get services/proxy'
    result, calls = proxy_smoke(tmp_path, FAKE_FAIL=forbidden)
    assert result.returncode == 1 and forbidden in result.stderr
    assert "FAILED: no successful response" in result.stderr


# ---------------------------------------------------------------- canary analysis
# `run` starts the canary (its only start) in the background, the smoke tests test it, and the
# "Judge" step waits for its verdict: on real traffic through Prometheus when PROMETHEUS_URL is
# set, else with synthetic requests to both revisions.

IMAGE = "r:2@sha256:0123456789ab"
GMP = "https://monitoring.googleapis.com/v1/projects/my-project/location/global/prometheus"
CLI = "-m predictor.rollout -n models --timeout 600s"
TOKEN = "ya29.a-token-of-the-canary-account"
# The rollout CLI: `run` notes its command line and whether it got the token in its
# environment (its own log: the background outlives the step), then ends as told; `status`
# answers with FAKE_STATUS_JSON.
FAKE_ROLLOUT = """case "$*" in
  *" run "*)
    printf '%s\\n' "$*" >> "$FAKE_RUN_LOG"
    printf 'token=%s\\n' "${PROMETHEUS_BEARER_TOKEN-unset}" >> "$FAKE_RUN_LOG"
    echo "[step 1/1] 10%" >&2
    [ -z "$FAKE_RUN_HANG" ] || exec /bin/sleep 60
    /bin/sleep "${FAKE_RUN_DELAY:-0.5}"
    echo "{\\"outcome\\": \\"$FAKE_OUTCOME\\"}"
    exit "${FAKE_RUN_RC:-0}" ;;
  *" status "*) echo "$*" >> "$FAKE_LOG"; cat "$FAKE_STATUS_JSON" ;;
  *) echo "$*" >> "$FAKE_LOG" ;;
esac
"""
FAKES = {
    "python": FAKE_ROLLOUT,
    "gcloud": f'echo "gcloud $*" >> "$FAKE_LOG"\necho {TOKEN}\n',
    "kubectl": 'echo "kubectl $*" >> "$FAKE_LOG"\nprintf 34.1.2.3\n',
    "sleep": "exec /bin/sleep 0.05\n",
}
STARTED = {
    "Knative": {
        "deploymentMode": "Knative",
        "generation": 4,
        "observedGeneration": 4,
        "ready": True,
        "model": {"image": IMAGE, "storageUri": "gs://b/m"},
    },
    "Standard": {
        **STATUS,
        "canaries": [
            {
                "name": "sha-0123456789ab",
                "ready": True,
                "service": "torch-predictor-sha-0123456789ab-predictor",
                "model": {"image": IMAGE, "storageUri": "gs://b/m"},
            }
        ],
    },
}
NOT_STARTED = {
    "Knative": {**STARTED["Knative"], "model": {"image": "r:1@a", "storageUri": "gs://b/m"}},
    "Standard": {**STATUS, "canaries": []},
}


def canary_steps() -> list[dict]:
    return load(GITHUB / "workflows" / "deliver.yml")["jobs"]["canary"]["steps"]


def wait_for(path: Path, seconds: float = 20) -> str:
    """The background `run`'s exit status, once its wrapper wrote it."""
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text().strip()


def start_canary(tmp_path: Path, mode: str, status: dict, **env: str):
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps(status))
    result, outputs, calls = run_step(
        canary_step("start"),
        tmp_path,
        FAKES,
        IMAGE=IMAGE,
        CANARY_PERCENT="10",
        DEPLOYMENT_MODE=mode,
        INTERVAL="5m",
        MIN_REQUESTS="20",
        FAKE_STATUS_JSON=str(status_file),
        FAKE_RUN_LOG=str(tmp_path / "run.log"),
        **env,
    )
    return result, calls


@pytest.mark.parametrize(
    ("prometheus", "mode", "gateway_ca", "analysis"),
    [
        # Real traffic, either mode: the gates, never the gateway.
        ("yes", "Knative", "", f"--interval 5m --prometheus {GMP} --min-requests 20"),
        ("yes", "Standard", "", f"--interval 5m --prometheus {GMP} --min-requests 20"),
        # Synthetic: Knative through the tag URLs on the gateway, as the smoke test.
        ("", "Knative", "", "--model-name m --ingress https://34.1.2.3"),
        ("", "Knative", "PEM", "--model-name m --ingress https://34.1.2.3 --ca-cert {ca}"),
        # Synthetic, Standard: through the API server's service proxy, found by the CLI.
        ("", "Standard", "", "--model-name m"),
    ],
)
def test_the_canary_is_started_once_by_run_with_prometheus_gates_when_configured(
    tmp_path, prometheus, mode, gateway_ca, analysis
):
    result, calls = start_canary(
        tmp_path,
        mode,
        STARTED[mode],
        PROMETHEUS_URL=GMP if prometheus else "",
        GATEWAY_CA=gateway_ca,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for(tmp_path / "canary-run.rc") == "0"
    run_log = (tmp_path / "run.log").read_text().splitlines()
    analysis = analysis.format(ca=tmp_path / "gateway-ca.crt")
    assert run_log[0] == (
        f"{CLI} run torch-predictor --image {IMAGE} --steps 10 {analysis} --output json"
    )
    # The token: from the job's own credentials, into run's environment, masked in the log,
    # never on a command line.
    assert run_log[1] == (f"token={TOKEN}" if prometheus else "token=unset")
    assert TOKEN not in run_log[0]
    assert (f"::add-mask::{TOKEN}" in result.stdout) == bool(prometheus)
    assert ("gcloud auth print-access-token" in calls) == bool(prometheus)
    # Waited for the canary to serve the image before the smoke tests, and nothing started it
    # but `run`.
    assert calls[-1] == "-m predictor.rollout -n models status torch-predictor -o json"
    assert not any(" start " in c or " rollback " in c for c in calls)
    kubectl = [c for c in calls if c.startswith("kubectl")]
    if prometheus or mode == "Standard":
        assert kubectl == []
    else:
        assert kubectl == [
            "kubectl -n istio-system get service istio-ingressgateway "
            "-o jsonpath={.status.loadBalancer.ingress[0].ip}"
        ]
    assert (tmp_path / "gateway-ca.crt").exists() == bool(gateway_ca)
    assert json.loads((tmp_path / "rollout-record.json").read_text()) == {"outcome": ""}


def test_the_start_step_fails_when_run_ends_before_the_canary_serves(tmp_path):
    result, calls = start_canary(
        tmp_path, "Knative", NOT_STARTED["Knative"], PROMETHEUS_URL="", FAKE_RUN_RC="1"
    )
    assert result.returncode == 1
    assert "::error::the rollout command failed (exit 1)" in result.stdout
    assert "[step 1/1] 10%" in result.stdout  # run's progress, shown
    assert calls.count("-m predictor.rollout -n models status torch-predictor -o json") >= 1


@pytest.mark.parametrize(("rc", "outcome"), [("0", "left at 10%"), ("1", "rolled back")])
def test_the_judge_step_reports_runs_verdict_and_its_record(tmp_path, rc, outcome):
    result, _ = start_canary(
        tmp_path,
        "Standard",
        STARTED["Standard"],
        PROMETHEUS_URL=GMP,
        FAKE_RUN_RC=rc,
        FAKE_OUTCOME=outcome,
        FAKE_RUN_DELAY="2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "canary-run.rc").exists()  # the smoke tests come first
    step = next(s for s in canary_steps() if s.get("id") == "analysis")
    assert step["if"] == "steps.mode.outputs.mode == 'canary'"
    result, _, _ = run_step(step, tmp_path, FAKES)
    assert result.returncode == int(rc), result.stdout + result.stderr
    assert "[step 1/1] 10%" in result.stdout
    summary = (tmp_path / "summary").read_text()
    assert f"exit {rc}" in summary and f'"outcome": "{outcome}"' in summary
    assert ("::error::the canary failed (exit 1)" in result.stdout) == (rc == "1")


def rollback_step() -> dict:
    return next(s for s in canary_steps() if " rollback " in s.get("run", ""))


def test_a_failed_smoke_test_stops_the_analysis_before_the_rollback(tmp_path):
    result, _ = start_canary(
        tmp_path, "Standard", STARTED["Standard"], PROMETHEUS_URL=GMP, FAKE_RUN_HANG="1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(tmp_path / "canary-run.pid")
    assert not (tmp_path / "canary-run.rc").exists()
    result, _, calls = run_step(
        rollback_step(),
        tmp_path,
        FAKES,
        CANARY_NAME="sha-0123456789ab",
        FAKE_STATUS_JSON=str(tmp_path / "status.json"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for(tmp_path / "canary-run.rc") == "143"  # SIGTERM, before the rollback
    assert calls == [
        "-m predictor.rollout -n models status torch-predictor -o json",
        f"{CLI} rollback torch-predictor --canary-name sha-0123456789ab",
    ]


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_the_rollback_step_passes_when_run_rolled_back_already(tmp_path, mode):
    status = tmp_path / "status.json"
    status.write_text(json.dumps(NOT_STARTED[mode]))
    (tmp_path / "canary-run.pid").write_text("999999\n")
    (tmp_path / "canary-run.rc").write_text("1\n")
    name = "sha-0123456789ab" if mode == "Standard" else ""
    result, _, calls = run_step(
        rollback_step(), tmp_path, FAKES, CANARY_NAME=name, FAKE_STATUS_JSON=str(status)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if mode == "Standard":
        # This run's canary is gone (another one may not be): nothing to roll back.
        assert "nothing to roll back" in result.stdout
        assert not any(" rollback " in c for c in calls)
    else:
        # Knative: the CLI finds nothing in progress itself and exits 0.
        assert calls == [f"{CLI} rollback torch-predictor"]


def test_the_canary_job_smoke_tests_before_the_analysis_and_uploads_the_record():
    job = load(GITHUB / "workflows" / "deliver.yml")["jobs"]["canary"]
    steps = job["steps"]
    assert job["env"]["PROMETHEUS_URL"] == "${{ vars.PROMETHEUS_URL }}"
    assert job["env"]["ROLLOUT_RECORD"] == "rollout-record.json"
    start = canary_step("start")
    assert start["env"]["INTERVAL"] == "${{ vars.CANARY_ANALYSIS_INTERVAL || '5m' }}"
    assert start["env"]["MIN_REQUESTS"] == "${{ vars.CANARY_MIN_REQUESTS || '20' }}"
    assert '--output json > "$ROLLOUT_RECORD"' in start["run"]
    # gcloud only where the token is needed, after the credentials, before the start.
    gcloud = step_index(steps, "google-github-actions/setup-gcloud@")
    assert steps[gcloud]["if"] == "steps.mode.outputs.mode == 'canary' && env.PROMETHEUS_URL != ''"
    assert step_index(steps, "./.github/actions/cluster-access") < gcloud < steps.index(start)
    # start -> smoke tests -> verdict -> rollback on failure -> record, whatever happened.
    smokes = [i for i, s in enumerate(steps) if "smoke_test.py" in s.get("run", "")]
    judge = next(i for i, s in enumerate(steps) if s.get("id") == "analysis")
    rollback = steps.index(rollback_step())
    upload = step_index(steps, "actions/upload-artifact@")
    assert steps.index(start) < min(smokes) and max(smokes) < judge < rollback < upload
    record = steps[upload]
    assert record["if"] == "always() && steps.start.outcome != 'skipped'"
    assert record["with"]["path"] == "${{ env.ROLLOUT_RECORD }}"
    assert "${{ github.run_attempt }}" in record["with"]["name"]
    # The same pin as the repository's other uploads.
    pins = {
        s["uses"]
        for path in WORKFLOWS
        for s in steps_of(path)
        if "actions/upload-artifact@" in s.get("uses", "")
    }
    assert pins == {record["uses"]}
    # The token never reaches a command line, and is no secret of the repository.
    text = (GITHUB / "workflows" / "deliver.yml").read_text()
    for line in text.splitlines():
        if "predictor.rollout" in line or "--" in line.split("#")[0]:
            assert "TOKEN" not in line, line
    assert "secrets." not in text
