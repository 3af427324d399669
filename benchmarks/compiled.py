"""Eager vs `--compile` vs AOTInductor on a compute-heavy CPU model: requests per second and
start-up time of each.

    .venv/bin/python -m benchmarks.compiled [--seconds 5] [--slices 3] [--out benchmarks/results]

The model: a small residual CNN (conv + batch norm + ReLU blocks, what Inductor fuses) on
FP32 [8, 3, 64, 64], random seeded weights, exported with torch.export; the AOTInductor
package is compiled from the same program. Each variant is started on core 0 and loaded by
wrk on core 1 over the V2 binary extension; every answer is first compared with the eager
module in torch. Start-up is from process start to ready: `--compile` cold (empty cache
directory) and warm (the same directory again). Writes `<out>/compiled.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Payload, run_wrk
from benchmarks.images import MODEL, check, serve

BATCH = (8, 3, 64, 64)


class Block(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResidualCNN(torch.nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.blocks = torch.nn.Sequential(*[Block(channels) for _ in range(blocks)])
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.stem(x)))
        return self.head(x.mean((2, 3)))


def build(directory: Path) -> tuple[Path, Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        model, (torch.zeros(2, *BATCH[1:]),), dynamic_shapes={"x": {0: batch}}
    )
    eager_dir, aoti_dir = directory / "export", directory / "aoti"
    eager_dir.mkdir()
    aoti_dir.mkdir()
    torch.export.save(program, str(eager_dir / "model.pt2"))
    torch._inductor.aoti_compile_and_package(program, package_path=str(aoti_dir / "model.pt2"))
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, *BATCH[1:]]}]}
    (aoti_dir / "model.json").write_text(json.dumps(signature))
    return eager_dir, aoti_dir, model


def payload(array: np.ndarray) -> Payload:
    raw = array.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return Payload(array, header + raw, "application/octet-stream", len(header))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        args.raw_dir = Path(tmp)
        eager_dir, aoti_dir, model = build(Path(tmp))
        array = np.random.default_rng(0).standard_normal(BATCH).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(array)).numpy()
        body = payload(array)
        cache = str(Path(tmp) / "inductor-cache")
        variants = [
            ("eager (torch.export)", eager_dir, []),
            ("--compile, cold cache", eager_dir, ["--compile", "--compile_cache_dir", cache]),
            ("--compile, warm cache", eager_dir, ["--compile", "--compile_cache_dir", cache]),
            ("AOTInductor package", aoti_dir, []),
        ]
        for title, model_dir, extra in variants:
            started = time.monotonic()
            process, url = serve(model_dir, args.server_core, extra)
            startup = time.monotonic() - started
            try:
                check(url, body, expected, rtol=1e-3, atol=1e-4)
                rates = []
                for _ in range(args.slices):
                    result = run_wrk(f"{url}/v2/models/{MODEL}/infer", body, args, args.seconds)
                    if result.errors:
                        raise RuntimeError(f"{title}: {result.errors} errors")
                    rates.append(result.requests / result.duration_s)
            finally:
                process.terminate()
                process.wait(timeout=60)
            rows.append((title, statistics.median(rates), startup))
            print(f"{title}: {statistics.median(rates):.1f} req/s, ready in {startup:.1f} s")
    base = rows[0][1]
    lines = [
        "# Eager vs --compile vs AOTInductor (CPU)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by"
        " `python -m benchmarks.compiled`: a residual CNN (4 blocks, 32 channels) on FP32"
        f" {list(BATCH)} per request over V2 binary; server on core {args.server_core}, wrk on"
        f" core {args.load_core}, {args.connections} connections, {args.slices} slices of"
        f" {args.seconds:g} s.",
        "",
        "| variant | req/s (median) | vs eager | start-up to ready |",
        "|---|---:|---:|---:|",
    ]
    for title, rate, startup in rows:
        lines.append(f"| {title} | {rate:,.1f} | {rate / base:.2f}x | {startup:.1f} s |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compiled.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'compiled.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
