"""Models that play canary revisions in the rollout tests (tests/test_rollout_e2e.py).

The healthy revisions serve the bundled doubler; these are the bad canaries. A module that sleeps
or raises a Python exception is not scriptable, so the slow and the failing ones are state-dict
models loaded with `--model_class tests.rollout_models:NAME`; the wrong one is TorchScript.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


class Multiply(torch.nn.Module):
    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class SlowDoubler(torch.nn.Module):
    """Right answers, 300 ms each."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.3)
        return x * 2


class FailingDoubler(torch.nn.Module):
    """Right answers for inputs below 3; raises for the others."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x >= 3).any()):
            raise RuntimeError("FailingDoubler cannot take inputs >= 3")
        return x * 2


def save_torchscript(module: torch.nn.Module, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(model_dir / "model.pt"))
    return model_dir


def save_state_dict(module: torch.nn.Module, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), model_dir / "model.pth")
    return model_dir
