"""GitHub Actions workflows: actionlint, schema, SHA pins, permissions and deploy concurrency."""

import re
import shutil
import subprocess
import sys
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
        assert writes <= {"id-token"}, f"{path.name}/{name} writes {writes}"


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
    build = " ".join(step.get("run", "") for step in jobs["build"]["steps"])
    assert "$IMAGE_REPOSITORY:$GITHUB_SHA" in " ".join(
        step.get("run", "") for step in jobs["build"]["steps"]
    )
    assert "docker push" in build
    canary_steps = jobs["canary"]["steps"]
    smoke = next(s for s in canary_steps if "smoke_test.py" in s.get("run", ""))
    assert "latest-" in smoke["run"]
    rollback = next(s for s in canary_steps if " rollback " in s.get("run", ""))
    assert rollback["if"].startswith("failure()")
    assert canary_steps.index(rollback) > canary_steps.index(smoke)
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
