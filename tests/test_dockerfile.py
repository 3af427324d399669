"""The Dockerfile: hadolint, checkov, and the properties the image must have."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_terraform import failed_checks, run_checkov

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    items = instructions()
    last_from = max(i for i, (k, _) in enumerate(items) if k == "FROM")
    return items[last_from:]


def test_hadolint_at_warning_level():
    if not HADOLINT.exists():
        pytest.skip("hadolint is not installed (make test installs it)")
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_warning(tmp_path):
    """Guards the test above: an unpinned pip install is a warning that fails it."""
    if not HADOLINT.exists():
        pytest.skip("hadolint is not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install --no-cache-dir requests\n")
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "DL3013" in result.stdout


def test_checkov_dockerfile_has_no_failed_checks():
    reports = run_checkov("--file", "Dockerfile", "--framework", "dockerfile")
    assert reports[0]["summary"]["passed"] > 20
    assert failed_checks(reports) == []


def test_multi_stage_slim_pinned_bases():
    bases = [args for keyword, args in instructions() if keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        image = base.split()[0]
        assert re.match(r"^python:3\.11\.?\d*-slim", image), image


def test_cpu_torch_by_default_and_cuda_by_build_arg():
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and a.startswith("TORCH_"))
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = " ".join(a for k, a in instructions() if k == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}"' in runs
    assert "^torch==" in runs and "-r /tmp/requirements.txt" in runs


def test_dependencies_are_installed_before_the_source_is_copied():
    items = instructions()
    index = {args.split()[0]: i for i, (k, args) in enumerate(items) if k == "COPY"}
    pip = max(i for i, (k, a) in enumerate(items) if k == "RUN" and "pip install" in a)
    assert index["requirements.txt"] < pip
    source = [i for i, (k, a) in enumerate(items) if k == "COPY" and "predictor/" in a]
    assert source and min(source) > pip


def test_runtime_runs_as_non_root_numeric_user_and_serves_both_ports():
    stage = runtime_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users == ["1000:1000"]
    exposed = {p for k, a in stage if k == "EXPOSE" for p in a.split()}
    assert exposed == {"8080", "8081"}
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "HOME=/tmp" in env
    copies = [a for k, a in stage if k == "COPY"]
    assert "predictor/ /app/predictor/" in copies and "models/ /app/models/" in copies
    assert ("WORKDIR", "/app") in stage
    # No --model_dir: the predictor picks STORAGE_URI's /mnt/models or the bundled model.
    entry = [a for k, a in stage if k == "ENTRYPOINT"]
    assert entry == ['["python", "-m", "predictor"]']
    health = " ".join(a for k, a in stage if k == "HEALTHCHECK")
    assert "python" in health and "curl" not in health


def test_dockerignore_keeps_the_context_small():
    text = (ROOT / ".dockerignore").read_text()
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    assert lines[0] == "*", "deny by default"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"requirements.txt", "predictor/", "models/"}
