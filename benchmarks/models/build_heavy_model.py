"""Build the compute-heavy benchmark model: a TorchScript MLP with random weights.

`--depth` x (Linear(width, width) + GELU), run `--repeat` times over (the same weights
again: compute grows, the file does not), input FP32 [-1, width], output FP32
[-1, width]; written as `model.pt` plus a `model.json` signature the predictor reads.
No downloads: the weights come from a seeded generator. Used by the batching and GPU
runs (`benchmarks/gpu_batching.py`, which picks `--repeat` so that one batch takes long
enough on the device at hand). The default size (4 x 4096) is about 270 MB.

Run: python benchmarks/models/build_heavy_model.py --out benchmarks/models/heavy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

DEFAULT_OUT = Path(__file__).resolve().parent / "heavy"


def build(width: int = 4096, depth: int = 4, repeat: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    stack = nn.Sequential(*layers).eval()
    return stack if repeat == 1 else nn.Sequential(*([stack] * repeat)).eval()


def signature(width: int) -> dict:
    return {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, width]}],
    }


def write(out: Path, width: int = 4096, depth: int = 4, repeat: int = 1) -> Path:
    """Write model.pt and model.json into `out`; return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    module = build(width, depth, repeat)
    with torch.no_grad():
        scripted = torch.jit.trace(module, torch.zeros(2, width))
    scripted.save(str(out / "model.pt"))
    (out / "model.json").write_text(json.dumps(signature(width), indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="run the layers this many times")
    args = parser.parse_args()
    out = write(args.out, args.width, args.depth, args.repeat)
    shape = f"{args.depth} x {args.width}, {args.repeat} times"
    print(f"wrote {out / 'model.pt'} and {out / 'model.json'} ({shape})")


if __name__ == "__main__":
    main()
