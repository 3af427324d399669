"""Each artifact kind loads and answers like the module it was made from; bad model
directories fail at start-up with one clear line."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
import torch

from predictor.loader import ModelLoadError, load_model, resolve_model_dir
from predictor.model import ModelOptions, TorchModel
from tests import toy_models
from tests.serving import REPO_ROOT


def serve_in_process(model_dir, model_class=None) -> TorchModel:
    model = TorchModel("toy", ModelOptions(model_dir=str(model_dir), model_class=model_class))
    model.load()
    return model


def infer(model: TorchModel, **inputs) -> dict[str, np.ndarray]:
    return asyncio.run(model.infer(inputs))


X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]], dtype=np.float32)


def expected_affine() -> np.ndarray:
    with torch.inference_mode():
        return toy_models.seeded_affine()(torch.from_numpy(X)).numpy()


def test_torchscript_with_signature(tmp_path):
    toy_models.save_torchscript(tmp_path, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE)
    model = serve_in_process(tmp_path)
    assert model.loaded.kind == "torchscript"
    assert model.get_input_types() == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    np.testing.assert_allclose(infer(model, x=X)["y"], expected_affine(), rtol=1e-6)


def test_torch_export_program_brings_its_own_signature(tmp_path):
    toy_models.save_exported(tmp_path, toy_models.seeded_affine(), (torch.zeros(2, 4),))
    model = serve_in_process(tmp_path)
    assert model.loaded.kind == "export"
    assert model.get_input_types() == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert model.get_output_types() == [{"name": "output-0", "datatype": "FP32", "shape": [-1, 2]}]
    np.testing.assert_allclose(infer(model, x=X)["output-0"], expected_affine(), rtol=1e-6)


def test_state_dict_with_module_class(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE)
    model = serve_in_process(tmp_path, "tests.toy_models:Affine")
    assert model.loaded.kind == "state_dict"
    np.testing.assert_allclose(infer(model, x=X)["y"], expected_affine(), rtol=1e-6)


def test_state_dict_class_named_in_model_json(tmp_path):
    signature = {**toy_models.AFFINE_SIGNATURE, "model_class": "tests.toy_models:Affine"}
    toy_models.save_state_dict(tmp_path, toy_models.seeded_affine(), signature)
    np.testing.assert_allclose(
        infer(serve_in_process(tmp_path), x=X)["y"], expected_affine(), rtol=1e-6
    )


def test_several_named_inputs_and_outputs(tmp_path):
    toy_models.save_torchscript(tmp_path, toy_models.TwoInputs(), toy_models.TWO_INPUTS_SIGNATURE)
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    outputs = infer(serve_in_process(tmp_path), b=b, a=a)
    assert outputs["sum"].tolist() == [4.0, 6.0]
    assert outputs["product"].tolist() == [3.0, 8.0]


def test_model_without_signature_gets_default_names(tmp_path):
    toy_models.save_torchscript(tmp_path, toy_models.TwoInputs(), None)
    model = serve_in_process(tmp_path)
    assert [spec["name"] for spec in model.get_input_types()] == ["input-0", "input-1"]


def test_declared_shape_is_checked_before_the_model_runs(tmp_path):
    from kserve.errors import InvalidInput

    toy_models.save_torchscript(tmp_path, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE)
    model = serve_in_process(tmp_path)
    with pytest.raises(InvalidInput, match=r"^input 'x': expected shape \[-1, 4\], got \[2, 3\]$"):
        infer(model, x=np.zeros((2, 3), np.float32))


def test_model_rejecting_input_is_a_client_error(tmp_path):
    """Without model.json nothing is known of the shape: the module's own error is a 400."""
    from kserve.errors import InvalidInput

    toy_models.save_torchscript(tmp_path, toy_models.TwoInputs(), None)
    model = serve_in_process(tmp_path)
    a, b = np.zeros(2, np.float32), np.zeros(3, np.float32)
    with pytest.raises(
        InvalidInput, match=r"cannot run on the given input \(FP32 \[2\], FP32 \[3\]\)"
    ):
        infer(model, **{"input-0": a, "input-1": b})


@pytest.mark.parametrize(
    "prepare,message",
    [
        (lambda d: None, "no model file in"),
        (lambda d: (d / "model.pt").write_bytes(b"not a model"), "is not a TorchScript archive"),
        (lambda d: (d / "model.pt2").write_bytes(b"garbage"), "cannot load"),
        (
            lambda d: [(d / "a.pt").write_bytes(b"1"), (d / "b.pth").write_bytes(b"2")],
            "ambiguous model directory",
        ),
        (
            lambda d: [(d / "model.pt").write_bytes(b"1"), (d / "model.json").write_text("{oops")],
            "not valid JSON",
        ),
    ],
)
def test_bad_model_directories(tmp_path, prepare, message):
    prepare(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path, None, torch.device("cpu"))


def test_state_dict_that_does_not_fit_its_class(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.Affine(width=3), None)
    with pytest.raises(ModelLoadError, match="does not fit tests.toy_models:Affine"):
        load_model(tmp_path, "tests.toy_models:Affine", torch.device("cpu"))


def test_bad_model_class_names(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.Affine(), None)
    for spec, message in [
        ("no_colon", "must look like"),
        ("no.such.module:X", "cannot import"),
        ("tests.toy_models:AFFINE_SIGNATURE", "not a torch.nn.Module"),
    ]:
        with pytest.raises(ModelLoadError, match=message):
            load_model(tmp_path, spec, torch.device("cpu"))


def test_warm_up_failure_stops_loading(tmp_path):
    toy_models.save_torchscript(tmp_path, toy_models.seeded_affine(), None)  # expects width 4
    with pytest.raises(ModelLoadError, match="warm-up inference .* failed"):
        serve_in_process(tmp_path)


def test_model_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_URI", raising=False)
    assert resolve_model_dir(None).name == "doubler"
    monkeypatch.setenv("STORAGE_URI", str(tmp_path))
    assert resolve_model_dir(None) == tmp_path
    monkeypatch.setenv("STORAGE_URI", "gs://bucket/model")
    with pytest.raises(ModelLoadError, match="storage initializer"):
        resolve_model_dir(None)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "missing"))


@pytest.mark.parametrize("bad", ["missing", "empty"])
def test_cli_exits_non_zero_with_one_line(tmp_path, bad):
    model_dir = tmp_path / "missing" if bad == "missing" else tmp_path
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--model_dir", str(model_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("does not exist" if bad == "missing" else "no model file") in lines[0]


def test_cli_refuses_several_workers():
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--workers", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--workers 2 is not supported" in result.stderr and "replicas" in result.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_stays_inside_the_server(tmp_path, dtype):
    """--dtype runs the model in half precision; the client still gets its own float type."""
    toy_models.save_torchscript(tmp_path, toy_models.seeded_affine(), toy_models.AFFINE_SIGNATURE)
    model = TorchModel("half", ModelOptions(model_dir=str(tmp_path), dtype=dtype))
    model.load()
    assert next(model.module.parameters()).dtype == getattr(torch, dtype)
    output = infer(model, x=X)["y"]
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, expected_affine(), rtol=0.05, atol=0.05)


def test_outputs_of_a_model_without_signature_are_learnt_from_the_warm_up(tmp_path):
    toy_models.save_torchscript(tmp_path, toy_models.TwoInputs(), None)
    model = serve_in_process(tmp_path)
    assert model.get_output_types() == [
        {"name": "output-0", "datatype": "FP32", "shape": [-1]},
        {"name": "output-1", "datatype": "FP32", "shape": [-1]},
    ]


def test_dim_dynamic_takes_batches_of_one(tmp_path):
    """torch.export records Dim.DYNAMIC as 2..inf (sizes 0 and 1 are specialised at export
    time), yet the program runs on a batch of 1: that floor is not the model's."""
    toy_models.save_bounded_export(
        tmp_path,
        toy_models.seeded_affine(),
        (torch.zeros(4, 4),),
        ({0: torch.export.Dim.DYNAMIC},),
    )
    model = serve_in_process(tmp_path)
    assert infer(model, x=np.ones((1, 4), np.float32))["output-0"].shape == (1, 2)
