"""Rebuild the bundled demo model: a TorchScript module that multiplies its input by 2.

python scripts/build_demo_model.py [OUTPUT_DIR]   (default: models/doubler)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


class Doubler(torch.nn.Module):
    """x -> 2x, for any shape and any numeric dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


# Names only: with no "datatype" or "shape" declared, any shape and numeric datatype run as
# sent (metadata shows the defaults, FP32 [-1]; V1's untyped JSON is read as FP32).
SIGNATURE = {
    "inputs": [{"name": "input-0"}],
    "outputs": [{"name": "output-0"}],
}


def build(output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Doubler()).save(str(output_dir / "model.pt"))
    (output_dir / "model.json").write_text(json.dumps(SIGNATURE, indent=2) + "\n")


if __name__ == "__main__":
    build(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parent.parent / "models" / "doubler"
    )
