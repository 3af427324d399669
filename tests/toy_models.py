"""Small modules the tests save as every artifact kind the predictor loads.

Importable as `tests.toy_models:Class`, the form `--model_class` takes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class Affine(torch.nn.Module):
    """y = x @ W + b for x of shape [N, 4]: a model with weights and a fixed input width."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class TwoInputs(torch.nn.Module):
    """(a, b) -> (a + b, a * b): several named inputs and outputs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a * b


class Slow(torch.nn.Module):
    """x -> 2x after a pause: shows whether inference blocks the event loop."""

    delay_s = 1.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return x * 2


AFFINE_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}
TWO_INPUTS_SIGNATURE = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1]},
        {"name": "b", "datatype": "FP32", "shape": [-1]},
    ],
    "outputs": [
        {"name": "sum", "datatype": "FP32", "shape": [-1]},
        {"name": "product", "datatype": "FP32", "shape": [-1]},
    ],
}


def seeded_affine() -> Affine:
    torch.manual_seed(0)
    return Affine().eval()


def write_signature(directory: Path, signature: dict) -> None:
    (directory / "model.json").write_text(json.dumps(signature))


def save_torchscript(directory: Path, module: torch.nn.Module, signature: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(directory / "model.pt"))
    if signature:
        write_signature(directory, signature)
    return directory


def save_exported(directory: Path, module: torch.nn.Module, example: tuple) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = tuple({0: batch} for _ in example)
    program = torch.export.export(module, example, dynamic_shapes=shapes)
    torch.export.save(program, str(directory / "model.pt2"))
    return directory


def save_state_dict(directory: Path, module: torch.nn.Module, signature: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), str(directory / "weights.pth"))
    if signature:
        write_signature(directory, signature)
    return directory


class FailsOnNegative(torch.nn.Module):
    """x -> 2x, but raises (a model bug, not the client's fault) when x sums below zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) < 0:
            raise KeyError("internal lookup failed")
        return x * 2


class BatchRecorder(torch.nn.Module):
    """x -> 2x, remembering the batch size of every call; NaN input is refused like a bad
    request would be, so batching can be shown to fail only the request at fault."""

    batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(torch.isnan(x).any()):
            raise ValueError("NaN in input")
        BatchRecorder.batch_sizes.append(int(x.shape[0]) if x.dim() else 0)
        return x * 2


class InPlaceDoubler(torch.nn.Module):
    """x -> 2x by writing into its input: needs inputs in writable memory of their own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2)


class PoisonsDevice(torch.nn.Module):
    """x -> 2x until an input sums below zero; from then on every call raises what torch
    raises after an illegal memory access on CUDA (the context is poisoned for good)."""

    def __init__(self) -> None:
        super().__init__()
        self.poisoned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.poisoned or float(x.sum()) < 0:
            self.poisoned = True
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return x * 2


class TokenClassifier(torch.nn.Module):
    """Token ids [N, L] (INT64, L at most 16) -> logits [N, 3]: an embedding lookup, so
    the ids must be integers."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))


def save_bounded_export(directory: Path, module: torch.nn.Module, example: tuple, dims) -> Path:
    """A torch.export program whose dims are given per input (Dim objects or None)."""
    directory.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(module, example, dynamic_shapes=dims)
    torch.export.save(program, str(directory / "model.pt2"))
    return directory


class RowSum(torch.nn.Module):
    """x [N, M] (FP64) -> the sum of each row [N]: two dynamic dimensions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)


ROW_SUM_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, -1]}],
    "outputs": [{"name": "total", "datatype": "FP64", "shape": [-1]}],
}


class Pairs(torch.nn.Module):
    """x [2k] -> the sum of each pair [k]: exported with a derived dimension (2 * batch), so
    an odd length fails the program's own guard."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, 2).sum(dim=1)


class OutOfMemoryOnLarge(torch.nn.Module):
    """x -> 2x, but runs out of memory (as torch reports it) on inputs over 1000 elements;
    with `stuck` set, on every input: a device that does not recover."""

    stuck = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if OutOfMemoryOnLarge.stuck or x.numel() > 1000:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2


class TinyCNN(torch.nn.Module):
    """Greyscale 28x28 images, NCHW [N, 1, 28, 28] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.head = torch.nn.Linear(4 * 26 * 26, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).flatten(1))


class Classifier(torch.nn.Module):
    """x [N, 4] -> logits [N, 5] through a linear layer with fixed weights: a classifier
    whose classes are ranked differently for each row of a test input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 5)
        with torch.no_grad():
            self.linear.weight.copy_(
                torch.tensor(
                    [
                        [1.0, -0.5, 0.25, 0.0],
                        [-0.75, 1.0, 0.5, -0.25],
                        [0.5, 0.5, -1.0, 0.75],
                        [0.0, -1.0, 1.0, 0.5],
                        [-0.25, 0.25, 0.0, -1.0],
                    ]
                )
            )
            self.linear.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, -0.1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ClassifierWithFlags(Classifier):
    """The Classifier's logits, and `logits > 0` (BOOL): an output no class can be read from."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(x)
        return logits, logits > 0


CLASSIFIER_LABELS = ["cat", "dog", "bird", "fish", "horse"]
CLASSIFIER_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 5]}],
}
CLASSIFIER_WITH_FLAGS_SIGNATURE = {
    "inputs": CLASSIFIER_SIGNATURE["inputs"],
    "outputs": [
        *CLASSIFIER_SIGNATURE["outputs"],
        {"name": "positive", "datatype": "BOOL", "shape": [-1, 5]},
    ],
}


def save_classifier(
    directory: Path, labels: list[str] | None = CLASSIFIER_LABELS, flags: bool = False
) -> Path:
    """A TorchScript Classifier (with its BOOL output when `flags`), its model.json, and a
    labels.txt of `labels` unless None."""
    module = ClassifierWithFlags() if flags else Classifier()
    signature = CLASSIFIER_WITH_FLAGS_SIGNATURE if flags else CLASSIFIER_SIGNATURE
    save_torchscript(directory, module.eval(), signature)
    if labels is not None:
        (directory / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    return directory


class BreaksAfterWarmUp(torch.nn.Module):
    """x -> 2x for the warm-up call only; every later call runs out of memory (as torch
    reports it), and so does the recovery check: after two requests the model is broken."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2
