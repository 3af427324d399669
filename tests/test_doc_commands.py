"""The curl commands in README.md and docs/deploy.md work as printed, against a real
server (the ingress host and port replaced by the local server's)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.serving import REPO_ROOT, PredictorProcess

pytestmark = pytest.mark.slow


def curl_commands(path) -> list[str]:
    """Every `curl` command in the file's code blocks, continuation lines joined."""
    text = path.read_text()
    blocks = re.findall(r"```(?:bash|console)\n(.*?)```", text, re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("curl "):
                commands.append(line)
    return commands


def test_the_docs_have_curl_commands():
    assert len(curl_commands(REPO_ROOT / "README.md")) >= 4
    assert len(curl_commands(REPO_ROOT / "docs" / "deploy.md")) >= 4


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_documented_curl_answers_200():
    with PredictorProcess() as server:
        address = f"127.0.0.1:{server.http_port}"
        commands = curl_commands(REPO_ROOT / "README.md") + curl_commands(
            REPO_ROOT / "docs" / "deploy.md"
        )
        for command in commands:
            local = (
                command.replace("localhost:8080", address)
                .replace("$INGRESS_HOST:$INGRESS_PORT", address)
                .replace("$SERVICE_HOSTNAME", "demo.example.com")
            )
            local = local.replace("curl ", "curl -s -o /dev/null -w '%{http_code}' ", 1)
            result = subprocess.run(
                ["bash", "-c", local], capture_output=True, text=True, timeout=30
            )
            assert result.stdout == "200", f"{command}\n-> {result.stdout} {result.stderr}"
