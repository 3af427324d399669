"""The Dockerfile: hadolint, checkov, and the properties the image must have."""

import ast
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.test_terraform import failed_checks, run_checkov

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
BASE_IMAGE = re.compile(r"^python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Each lock, the requirements file it is compiled from and the platform it is compiled for.
LOCKS = {
    "requirements-cpu.lock": ("requirements.txt", "x86_64-manylinux_2_36"),
    "requirements-cuda.lock": ("requirements.txt", "x86_64-manylinux_2_36"),
    "requirements-rollout.lock": ("requirements-rollout.txt", "x86_64-manylinux_2_39"),
}
IMAGE_LOCKS = ["requirements-cpu.lock", "requirements-cuda.lock"]


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


def test_multi_stage_slim_bases_pinned_by_digest():
    bases = [args.split() for keyword, args in instructions() if keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        assert BASE_IMAGE.match(base[0]), f"{base[0]} is not python:3.11-slim-bookworm@sha256:…"
    assert len({base[0] for base in bases}) == 1, "both stages start from the same image"


def test_dependabot_keeps_the_digest_and_the_specifiers_current():
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    by_ecosystem = {u["package-ecosystem"]: u for u in updates}
    assert {"github-actions", "docker", "terraform", "pip"} <= set(by_ecosystem)
    # The Dockerfile is at the root; Dependabot cannot resolve an ARG in FROM, so the image is
    # spelled out in each FROM (the test above).
    assert by_ecosystem["docker"]["directory"] == "/"
    # Digest updates only: the locks are compiled for CPython 3.11.
    ignores = by_ecosystem["docker"]["ignore"]
    ignored = {i["dependency-name"]: set(i["update-types"]) for i in ignores}
    assert "version-update:semver-minor" in ignored["python"]
    assert by_ecosystem["pip"]["directory"] == "/"


def test_cpu_torch_by_default_and_cuda_by_build_arg():
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and a.startswith("TORCH_"))
    assert args["TORCH_VARIANT"] == "cpu"
    runs = " ".join(a for k, a in instructions() if k == "RUN")
    assert '-r "/tmp/requirements-${TORCH_VARIANT}.lock"' in runs
    copied = [a.split() for k, a in instructions() if k == "COPY" and ".lock" in a]
    assert copied == [[*IMAGE_LOCKS, "/tmp/"]]
    torch = requirements_of(ROOT / "requirements.txt")["torch"]
    (version,) = [str(s.version) for s in torch.specifier]
    cpu, cuda = (pins_of(lock) for lock in IMAGE_LOCKS)
    assert cpu["torch"] == Version(f"{version}+cpu")
    assert cuda["torch"] == Version(version), "PyPI's Linux torch is the CUDA build"
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in options_of("requirements-cpu.lock")
    assert options_of("requirements-cuda.lock") == [], "the CUDA lock is all PyPI"
    assert not any(name.startswith("nvidia-") for name in cpu)
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton"} <= set(cuda)


@pytest.mark.parametrize(("variant", "builds"), [("cpu", True), ("cuda", True), ("rocm", False)])
def test_the_build_refuses_a_variant_it_has_no_lock_for(variant, builds):
    run = next(a for k, a in instructions() if k == "RUN" and "pip install" in a)
    guard = run.split("&& pip install")[0]
    result = subprocess.run(
        ["sh", "-c", guard],
        env={"PATH": "/usr/bin:/bin", "TORCH_VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert (result.returncode == 0) == builds, result.stderr
    if not builds:
        assert "TORCH_VARIANT must be cpu or cuda, got 'rocm'" in result.stderr


def test_the_variants_differ_only_in_torch_and_its_cuda_packages():
    cpu, cuda = (pins_of(lock) for lock in IMAGE_LOCKS)
    shared = set(cpu) - {"torch"}
    assert shared <= set(cuda)
    assert {name: cpu[name] for name in shared} == {name: cuda[name] for name in shared}, (
        "the image variants should differ only in torch's build: run make lock"
    )
    extra = set(cuda) - set(cpu)
    assert all(re.match(r"^(nvidia-|cuda-|triton$)", name) for name in extra), extra


def test_every_pip_install_uses_the_hash_pinned_lock():
    installs = [
        command
        for k, a in instructions()
        if k == "RUN"
        for command in shell_commands(a)
        if pip_install_args(command) is not None
    ]
    assert installs, "the build stage installs the dependencies with pip"
    for command in installs:
        args = pip_install_args(command)
        assert "--require-hashes" in args and "--no-deps" in args, command
        assert "--no-cache-dir" in args, command
        assert args[args.index("-r") + 1] == "/tmp/requirements-${TORCH_VARIANT}.lock", command
    # No `pip install --upgrade pip` and the like: the venv's own pip does the install.
    assert not any({"--upgrade", "-U"} & set(pip_install_args(c)) for c in installs)


def test_dependencies_are_installed_before_the_source_is_copied():
    items = instructions()
    index = {args.split()[0]: i for i, (k, args) in enumerate(items) if k == "COPY"}
    pip = max(i for i, (k, a) in enumerate(items) if k == "RUN" and "pip install" in a)
    assert index["requirements-cpu.lock"] < pip
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
    assert allowed == {*IMAGE_LOCKS, "predictor/", "models/"}
    # Everything the Dockerfile copies from the context is let in.
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert source in allowed, source


# ---------------------------------------------------------------- the lock files


def logical_lines(path: Path) -> list[str]:
    """A requirements file's lines with continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def requirements_of(path: Path) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in logical_lines(path) if not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def entries_of(lock: str) -> list[tuple[Requirement, list[str]]]:
    """(requirement, hashes) for every requirement of a lock."""
    out = []
    for line in logical_lines(ROOT / lock):
        if line.startswith("-"):
            continue
        spec, *options = line.split(" --hash=")
        out.append((Requirement(spec), [o.strip() for o in options]))
    return out


def pins_of(lock: str) -> dict[str, Version]:
    pins = {}
    for req, _ in entries_of(lock):
        (spec,) = req.specifier
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def options_of(lock: str) -> list[str]:
    return [line for line in logical_lines(ROOT / lock) if line.startswith("-")]


LOCAL_PATH = re.compile(r"file:|(?:^|[\s=(\[])(?:~|\.{1,2})?/[\w.~$-]")


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_requirement_with_hashes(lock):
    entries = entries_of(lock)
    assert len(entries) > 10
    for req, hashes in entries:
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.url and not req.extras, req
        assert hashes, f"{lock}: {req} has no --hash"
        for h in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), f"{lock}: {req}: {h}"
    names = [canonicalize_name(req.name) for req, _ in entries]
    assert len(names) == len(set(names)), "one pin per package"


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_satisfies_its_requirements_file(lock):
    source, _ = LOCKS[lock]
    pins = pins_of(lock)
    for name, req in requirements_of(ROOT / source).items():
        assert name in pins, f"{lock} lacks {name} from {source}: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, {source} asks {req.specifier}: run make lock"
        )


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_names_no_local_path_and_says_how_it_was_made(lock):
    source, platform = LOCKS[lock]
    text = (ROOT / lock).read_text()
    for number, line in enumerate(text.splitlines(), 1):
        assert not LOCAL_PATH.search(line), f"{lock}:{number}: local path in {line!r}"
    for option in options_of(lock):
        flag, _, value = option.partition(" ")
        assert flag in {"--index-url", "--extra-index-url", "--find-links"}, option
        assert value.startswith("https://"), option
    header = text.splitlines()[:3]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    assert header[1] == "#    make lock"
    assert (
        f"uv pip compile {source} --generate-hashes --python-version 3.11"
        f" --python-platform {platform}" in header[2]
    )


def test_lock_is_regenerated_by_make_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lock: ", makefile, re.M)
    assert "scripts/lock.sh" in makefile
    script = ROOT / "scripts" / "lock.sh"
    assert script.stat().st_mode & 0o111, "scripts/lock.sh is executable"
    text = script.read_text()
    for lock in LOCKS:
        assert lock in text
    assert re.search(r"^uv==\d+\.\d+\.\d+$", (ROOT / "requirements-dev.txt").read_text(), re.M)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not on PATH")
def test_lock_script_passes_shellcheck():
    result = subprocess.run(
        ["shellcheck", str(ROOT / "scripts" / "lock.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rollout_requirements_are_requirements_txt_s_own():
    rollout = requirements_of(ROOT / "requirements-rollout.txt")
    runtime = requirements_of(ROOT / "requirements.txt")
    assert set(rollout) == {"kubernetes", "requests"}
    for name, req in rollout.items():
        assert req.specifier == runtime[name].specifier, name
        assert req.marker == runtime[name].marker and req.extras == runtime[name].extras, name


def test_rollout_cli_imports_only_what_its_lock_installs():
    """predictor.rollout runs on the cluster-access action's small venv, not the image's."""
    third_party = set()
    package = ROOT / "predictor"
    for path in [package / "__init__.py", *(package / "rollout").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            third_party |= {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names)
    # yaml (the gates file) is PyYAML, which the kubernetes client needs: in the lock too.
    assert third_party <= {"predictor", "kubernetes", "requests", "yaml"}, third_party
    lock = (ROOT / "requirements-rollout.lock").read_text()
    assert re.search(r"^pyyaml==", lock, re.MULTILINE)


def test_cluster_access_action_installs_the_rollout_lock():
    action = yaml.safe_load((ROOT / ".github/actions/cluster-access/action.yml").read_text())
    scripts = [step["run"] for step in action["runs"]["steps"] if "run" in step]
    installs = [c for script in scripts for c in shell_commands(script) if pip_install_args(c)]
    assert len(installs) == 1
    args = pip_install_args(installs[0])
    assert "--require-hashes" in args
    assert args[args.index("-r") + 1] == "requirements-rollout.lock"
    assert not any("torch" in script for script in scripts)


# ---------------------------------------------------------------- Scorecard: Pinned-Dependencies

PIP = re.compile(r"^(?:.*/)?pip(?:3(?:\.\d+)?)?$")
PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
# pip install options that take a value (the value is not a package).
PIP_VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--platform",
    "--python-version", "--implementation", "--abi", "--src", "--upgrade-strategy",
    "--progress-bar", "--cache-dir", "--log", "--timeout", "--retries", "--proxy",
    "--trusted-host", "--cert", "--client-cert", "-C", "--config-settings", "--global-option",
    "--no-binary", "--only-binary", "--python", "--exists-action", "--report", "--root-user-action",
}  # fmt: skip


COMMAND_PREFIXES = {"sudo", "env", "time", "exec", "command", "nice", "nohup", "then", "do", "else"}


def shell_commands(script: str) -> list[str]:
    """Simple commands of a shell script: continuations joined, split at ; && || | and newlines."""
    script = re.sub(r"\\\n", " ", script)
    commands = (" ".join(c.split()) for c in re.split(r"&&|\|\||[;|\n]", script))
    return [c for c in commands if c]


def pip_install_args(command: str) -> list[str] | None:
    """The arguments after `install` when the command is a pip install, else None."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    # Skip what may precede the command itself: VAR=value, sudo, env and the like.
    while words and (re.match(r"^\w+=", words[0]) or words[0] in COMMAND_PREFIXES):
        words = words[1:]
        while words and words[0].startswith("-"):  # options of sudo/env
            words = words[1:]
    if words and PIP.match(words[0]) and words[1:2] == ["install"]:
        return words[2:]
    if words and PYTHON.match(words[0]) and words[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    return None


def is_local_path(word: str) -> bool:
    return word in {".", ".."} or word.startswith(("./", "../", "/"))


def unpinned_pip_install(args: list[str]) -> bool:
    """Scorecard's rule: hash-checked (--require-hashes) or installing local paths only."""
    if "--require-hashes" in args:
        return False
    packages, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in PIP_VALUE_OPTIONS:
            if word in {"-r", "--requirement"}:
                return True  # a requirements file without --require-hashes
            skip = True
        elif word in {"-e", "--editable"}:
            continue
        elif not word.startswith("-"):
            packages.append(word)
    return not packages or not all(is_local_path(p) for p in packages)


def pinned_dependency_findings(dockerfile: Path, yaml_files: list[Path]) -> list[str]:
    """Unpinned base images and pip installs in a Dockerfile and in workflow/action scripts."""
    findings = []
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages = set()
    scripts = []
    for line in text.splitlines():
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            image = words[0]
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            if image not in stages and not re.search(r"@sha256:[0-9a-f]{64}$", image):
                findings.append(f"{dockerfile.name}: FROM {image} is not pinned by digest")
        elif keyword.upper() == "RUN":
            scripts.append((dockerfile.name, args))
    for path in yaml_files:
        doc = yaml.safe_load(path.read_text()) or {}
        jobs = doc.get("jobs") or {}
        steps = [s for job in jobs.values() for s in job.get("steps", [])]
        steps += (doc.get("runs") or {}).get("steps", [])
        scripts += [(f"{path.parent.name}/{path.name}", s["run"]) for s in steps if "run" in s]
    for name, script in scripts:
        for command in shell_commands(script):
            args = pip_install_args(command)
            if args is not None and unpinned_pip_install(args):
                findings.append(f"{name}: unpinned `{command}`")
    return findings


def test_pinned_dependencies_scorecard_style():
    """Scorecard Pinned-Dependencies over the Dockerfile, the workflows and the actions."""
    github = ROOT / ".github"
    yaml_files = sorted((github / "workflows").glob("*.yml")) + sorted(
        (github / "actions").glob("*/action.yml")
    )
    assert len(yaml_files) >= 5
    assert pinned_dependency_findings(DOCKERFILE, yaml_files) == []


def test_pinned_dependencies_check_catches_unpinned_installs(tmp_path):
    """Guards the test above with what it must flag and what it must let through."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim AS build\n"
        "RUN python -m venv /v && pip install --no-cache-dir -r requirements.txt\n"
        "FROM build AS test\n"
        f"FROM python:3.11-slim@sha256:{'0' * 64}\n"
        "RUN pip install --require-hashes --no-deps -r a.lock && pip install --no-deps .\n"
    )
    workflow = tmp_path / "ci.yml"
    workflow.write_text(
        yaml.safe_dump(
            {
                "on": "push",
                "jobs": {
                    "a": {
                        "steps": [
                            {"run": "python -m pip install --upgrade pip"},
                            {"run": "pip3 install requests==2.32.0 \\\n  --quiet"},
                            {"run": "python3 -m pip install --require-hashes -r r.lock"},
                            {"run": "echo pip install is fine in an echo; pip install -e ./tools"},
                        ]
                    }
                },
            }
        )
    )
    action = tmp_path / "action.yml"
    action.write_text(yaml.safe_dump({"runs": {"steps": [{"run": "sudo pip install ansible"}]}}))
    findings = pinned_dependency_findings(dockerfile, [workflow, action])
    assert findings == [
        "Dockerfile: FROM python:3.11-slim is not pinned by digest",
        "Dockerfile: unpinned `pip install --no-cache-dir -r requirements.txt`",
        f"{tmp_path.name}/ci.yml: unpinned `python -m pip install --upgrade pip`",
        f"{tmp_path.name}/ci.yml: unpinned `pip3 install requests==2.32.0 --quiet`",
        f"{tmp_path.name}/action.yml: unpinned `sudo pip install ansible`",
    ]
