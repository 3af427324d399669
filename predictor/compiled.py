"""`--compile`: the module through `torch.compile` at load, warmed up on the batch sizes it
will be served with, so no request pays for a compilation.

Inductor's caches go to `--compile_cache_dir` (TORCHINDUCTOR_CACHE_DIR), so a restart with
the same directory (a volume, or the image) reuses the compiled code. A compilation that
fails stops the process with one line, or, with `--compile_fallback`, serves the eager
module and says so in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

from .errors import first_line

logger = logging.getLogger("predictor")
MODES = ("default", "reduce-overhead", "max-autotune")


class CompileError(RuntimeError):
    """torch.compile could not compile the module or run it on a warm-up input."""


def compile_module(
    module: torch.nn.Module, kind: str, mode: str, dynamic: bool, cache_dir: str | None
) -> torch.nn.Module:
    """The module wrapped by torch.compile (compiled lazily: warm_up compiles it)."""
    if kind in ("torchscript", "aoti"):
        raise CompileError(
            f"--compile takes a torch.export program or a state dict's module; a {kind} model "
            "is already compiled by its own toolchain"
        )
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    # dynamic: one compilation for every batch size batching forms, instead of one each.
    compiled = torch.compile(module, mode=None if mode == "default" else mode, dynamic=dynamic)
    return compiled  # type: ignore[return-value]


def warm_up(run: Callable[[int], object], batch_sizes: list[int]) -> None:
    """Runs (and so compiles) the module once for each batch size to be served."""
    for rows in batch_sizes:
        try:
            run(rows)
        except Exception as error:  # dynamo and inductor raise many kinds
            raise CompileError(
                f"torch.compile failed on a batch of {rows}: {first_line(error)}"
            ) from error


def served_batch_sizes(max_batch: int) -> list[int]:
    """Sizes that cover what will be served: 1 and 2 (torch specialises sizes 0 and 1, so
    2 is the first dynamic one) and the largest batch."""
    return sorted({1, min(2, max_batch), max_batch})
