"""Adaptive batching (and GPU) benchmark on the compute-heavy MLP.

Measures, on one device:
1. the limit: the model called in-process on batches of `--max_batch_size` rows;
2. the predictor with adaptive batching (`--max_batch_size 64`, and a delay of half a
   batch's time: with as many callers as rows in a batch, the callers one batch answers
   come back while the next runs, and a short delay splits them into two half batches);
3. the predictor without batching (`--max_batch_size 1`);
driving 2 and 3 with `--concurrency` concurrent gRPC ModelInfer calls of one row each
(raw contents) for `--seconds`. Prints a markdown table (rows/s, p50, p99, share of the
limit) and the issue's two targets, and writes them to `--out`.

The model is made heavy enough for the device: with `--batch_ms`, its layers are run
over as many times as it takes for one full batch to last about that long in-process, so
the limit is what the device computes, not what one server process can parse (a GPU
runs the default 4 x Linear(4096) on 64 rows in well under a millisecond).

GPU:   python -m benchmarks.gpu_batching --device cuda
Smoke: python -m benchmarks.gpu_batching --device cpu --width 64 --depth 2 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import grpc_load
from benchmarks.models import build_heavy_model
from tests.serving import PredictorProcess

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAW_DIR = RESULTS_DIR / "raw"


def direct_rows_per_second(model_dir: Path, device: str, batch: int, width: int, seconds: float):
    """Rows/s of the TorchScript model called in-process on full batches: the limit."""
    module = torch.jit.load(str(model_dir / "model.pt"), map_location=device).eval()
    inputs = torch.randn(batch, width, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(3):  # warm-up
            module(inputs)
        sync()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds and calls < 100_000:
            module(inputs)
            calls += 1
        sync()
        elapsed = time.perf_counter() - start
    return calls * batch / elapsed, elapsed / calls * 1e6


def drive(target: str, width: int, concurrency: int, seconds: float, processes: int) -> dict:
    """`concurrency` one-row calls in flight, split over `processes` client processes."""
    if processes <= 1:
        return asyncio.run(
            grpc_load.run_load(target, "model", width, concurrency, seconds, 10_000_000, rows=1)
        )
    command = [
        sys.executable,
        "-m",
        "benchmarks.grpc_load",
        "--target",
        target,
        "--size",
        str(width),
        "--rows",
        "1",
        "--concurrency",
        str(max(1, concurrency // processes)),
        "--seconds",
        str(seconds),
    ]
    clients = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    results = []
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "duration_s": max(r["duration_s"] for r in results),
        "p50_us": float(np.median([r["p50_us"] for r in results])),
        "p99_us": max(r["p99_us"] for r in results),
    }


def serve_and_drive(model_dir: Path, args: argparse.Namespace, batch: int) -> dict:
    extra = [
        "--device",
        args.device,
        "--max_batch_size",
        str(batch),
        "--max_batch_delay_ms",
        str(args.max_batch_delay_ms),
    ]
    with PredictorProcess(model_dir=model_dir, extra_args=extra, ready_timeout=300) as server:
        check = np.ones((1, args.width), dtype=np.float32)
        got = grpc_load.infer_once(server.grpc_target, "model", check)
        if got.shape != (1, args.width):
            raise RuntimeError(f"unexpected output shape {got.shape}")
        drive(server.grpc_target, args.width, args.concurrency, 1.0, args.client_processes)
        return drive(
            server.grpc_target, args.width, args.concurrency, args.seconds, args.client_processes
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model_dir", type=Path, default=None, help="default: build one")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument(
        "--batch_ms",
        type=float,
        default=None,
        help="make one full batch take about this long in-process (default: 40 on cuda, "
        "0 = the model as built)",
    )
    parser.add_argument("--max_batch_size", type=int, default=64)
    parser.add_argument(
        "--max_batch_delay_ms",
        type=float,
        default=None,
        help="default: half the time of one full batch, at least 2 (long enough for the "
        "callers one batch answered to come back and join the next)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--client_processes", type=int, default=None, help="default: 4 on cuda, 1 on cpu"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_batching.md")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: use --device cpu (with small --width) to smoke-test")
        return 2
    if args.batch_ms is None:
        args.batch_ms = 40.0 if args.device == "cuda" else 0.0
    if args.client_processes is None:
        args.client_processes = 4 if args.device == "cuda" else 1

    model_dir, repeat = args.model_dir, 1
    if model_dir is None:
        model_dir = heavy_model(args.width, args.depth, 1)
        if args.batch_ms > 0:
            _, batch_us = direct_rows_per_second(
                model_dir, args.device, args.max_batch_size, args.width, 1.0
            )
            repeat = max(1, round(args.batch_ms * 1e3 / batch_us))
            model_dir = heavy_model(args.width, args.depth, repeat)

    limit, batch_us = direct_rows_per_second(
        model_dir, args.device, args.max_batch_size, args.width, args.seconds
    )
    if args.max_batch_delay_ms is None:
        args.max_batch_delay_ms = max(2.0, round(batch_us / 2e3, 1))
    # The limit's latency columns are one batch-call's time.
    rows = [(f"direct call, batch {args.max_batch_size} (limit)", limit, batch_us, batch_us)]
    rates = []
    for label, batch in (
        (
            f"predictor, batching {args.max_batch_size} / {args.max_batch_delay_ms:g} ms",
            args.max_batch_size,
        ),
        ("predictor, no batching", 1),
    ):
        result = serve_and_drive(model_dir, args, batch)
        rate = result["requests"] / result["duration_s"]
        rates.append(rate)
        errors = f" ({result['errors']} errors)" if result["errors"] else ""
        rows.append((label + errors, rate, result["p50_us"], result["p99_us"]))

    batched, unbatched = rates
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    lines = [
        f"{args.depth} x Linear({args.width}, {args.width}) + GELU, run {repeat} times, on "
        f"{device_name} (torch {torch.__version__}); {args.concurrency} concurrent one-row "
        f"gRPC calls from {args.client_processes} client processes, {args.seconds:g} s each",
        "",
        "| configuration | rows/s | p50 ms | p99 ms | of limit |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {label} | {rate:,.0f} | {p50 / 1e3:.2f} | {p99 / 1e3:.2f} | {rate / limit:.0%} |"
            for label, rate, p50, p99 in rows
        ),
        "",
        f"- batching vs no batching: {batched / unbatched:.1f}x (target >= 5x): "
        f"{'met' if batched >= 5 * unbatched else 'MISSED'}",
        f"- batching vs the limit: {batched / limit:.0%} (target >= 60%): "
        f"{'met' if batched >= 0.6 * limit else 'MISSED'}",
    ]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Adaptive batching: `{' '.join(sys.argv[1:])}`\n\n" + report)
    print(f"wrote {args.out}")
    return 0


def heavy_model(width: int, depth: int, repeat: int) -> Path:
    model_dir = RAW_DIR / f"heavy-{depth}x{width}-r{repeat}"
    if not (model_dir / "model.pt").exists():
        build_heavy_model.write(model_dir, width, depth, repeat)
    return model_dir


if __name__ == "__main__":
    sys.exit(main())
