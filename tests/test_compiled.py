"""Compiled models on the CPU: an AOTInductor package loaded as it is, and `--compile`
(torch.compile at load, warmed up on the served batch sizes, with a cache directory), each
compiled in the test from a small model and compared with the eager module."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch

from tests.serving import REPO_ROOT, PredictorProcess

pytestmark = pytest.mark.slow

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * 2


def exported() -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(
        Small().eval(), (torch.zeros(2, 4),), dynamic_shapes={"x": {0: batch}}
    )


def eager(array: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return Small().eval()(torch.from_numpy(array)).numpy()


def infer(server, array: np.ndarray, name: str = "x") -> np.ndarray:
    body = {
        "inputs": [
            {
                "name": name,
                "datatype": "FP32",
                "shape": list(array.shape),
                "data": array.ravel().tolist(),
            }
        ]
    }
    response = requests.post(f"{server.http_url}/v2/models/model/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.array(output["data"], np.float32).reshape(output["shape"])


@pytest.fixture(scope="module")
def aoti_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("aoti")
    torch._inductor.aoti_compile_and_package(exported(), package_path=str(out / "model.pt2"))
    (out / "model.json").write_text(
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]})
    )
    return out


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    torch.export.save(exported(), str(out / "model.pt2"))
    return out


def test_an_aoti_package_is_told_apart_from_an_export_and_served(aoti_dir):
    from predictor.loader import _is_aoti_package

    assert _is_aoti_package(aoti_dir / "model.pt2")
    with PredictorProcess(aoti_dir) as server:
        assert "loaded aoti model" in server.logs()
        np.testing.assert_allclose(infer(server, X), eager(X), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(infer(server, X[:1]), eager(X[:1]), rtol=1e-5, atol=1e-6)
        bad = requests.post(
            f"{server.http_url}/v2/models/model/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]},
        )
        assert bad.status_code == 400 and "expected shape [-1, 4]" in bad.json()["error"]


def test_an_aoti_package_refuses_another_dtype(aoti_dir):
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--model_dir", str(aoti_dir), "--dtype", "float16"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "compiled ahead of time for its own dtypes" in result.stderr


def test_compile_warms_up_the_batch_sizes_and_fills_the_cache(export_dir, tmp_path):
    cache = tmp_path / "inductor-cache"
    args = ["--compile", "--max_batch_size", "4", "--compile_cache_dir", str(cache)]
    with PredictorProcess(export_dir, extra_args=args, ready_timeout=300) as server:
        assert "with torch.compile for batch sizes [1, 2, 4]" in server.logs()
        for rows in (1, 3, 4):
            np.testing.assert_allclose(
                infer(server, X.repeat(2, 0)[:rows]),
                eager(X.repeat(2, 0)[:rows]),
                rtol=1e-5,
                atol=1e-6,
            )
    # Inductor wrote its compiled code there: a restart with this directory reuses it.
    assert any(path.is_file() for path in cache.rglob("*"))


def test_compile_refuses_torchscript_or_falls_back_when_asked():
    doubler = REPO_ROOT / "models" / "doubler"
    refused = subprocess.run(
        [sys.executable, "-m", "predictor", "--model_dir", str(doubler), "--compile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "a torchscript model is already compiled" in lines[0]
    with PredictorProcess(doubler, extra_args=["--compile", "--compile_fallback"]) as server:
        assert "serving the eager module (--compile_fallback)" in server.logs()
        body = {"instances": [1, 2]}
        response = requests.post(f"{server.http_url}/v1/models/model:predict", json=body)
        assert response.json() == {"predictions": [2.0, 4.0]}
