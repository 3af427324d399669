"""Images per second for the image classifier example (examples/image_classifier) over the
V2 binary tensor extension: JPEGs in as BYTES, decoded, resized and normalised by the server,
logits out.

    .venv/bin/python -m benchmarks.images [--seconds 5] [--slices 3] [--out benchmarks/results]

The server runs on core 0 (`--server-core`), wrk on core 1 (`--load-core`), as in
benchmarks/harness.py. Three set-ups: one image per request without batching, one image per
request with adaptive batching (--max_batch_size 8), and eight images per request. Each
answer is first checked against the model run directly in torch. Writes `<out>/images.md`.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from benchmarks.harness import Payload, run_wrk
from tests.serving import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "cnn"


def jpeg(seed: int) -> bytes:
    """A 320x240 photo-sized JPEG of noise over a colour (decoding cost like a real photo)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 255, 3) + rng.integers(-40, 40, (240, 320, 3)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def v2_binary(images: list[bytes]) -> Payload:
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return Payload(np.zeros(0), header + raw, "application/octet-stream", len(header))


def expected_logits(model_dir: Path, images: list[bytes]) -> np.ndarray:
    from predictor.images import ImageDecoder

    settings = json.loads((model_dir / "model.json").read_text())["inputs"][0]["image"]
    encoded = np.empty(len(images), dtype=object)
    encoded[:] = images
    decoder = ImageDecoder.from_settings("image", settings, "bench")
    (tensor,) = decoder.decode(encoded, lambda f, xs: [f(x) for x in xs]).values()
    with torch.no_grad():
        return (
            torch.export.load(str(model_dir / "model.pt2"))
            .module()(torch.from_numpy(tensor))
            .numpy()
        )


def serve(model_dir: Path, core: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = ["taskset", "-c", str(core), sys.executable, "-m", "predictor"]
    command += ["--model_dir", str(model_dir), "--model_name", MODEL, "--http_port", str(port)]
    command += ["--grpc_port", str(free_port()), "--drain_seconds", "0", *extra]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # --compile compiles before ready
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise RuntimeError("the predictor exited during start-up")
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the predictor did not become ready")


def check(
    url: str, payload: Payload, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """One V2 binary request, its FP32 answer compared with what torch computed."""
    headers = {
        "Content-Type": payload.content_type,
        "Inference-Header-Content-Length": str(payload.header_length),
    }
    response = requests.post(f"{url}/v2/models/{MODEL}/infer", data=payload.body, headers=headers)
    response.raise_for_status()
    start = int(response.headers["Inference-Header-Content-Length"])
    got = np.frombuffer(response.content[start:], "<f4").reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    setups = [
        ("1 image per request", 1, []),
        ("1 image per request, --max_batch_size 8", 1, ["--max_batch_size", "8"]),
        ("8 images per request", 8, []),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        import runpy

        runpy.run_path(str(REPO_ROOT / "examples/image_classifier/build.py"), run_name="b")[
            "build"
        ](model_dir)
        args.raw_dir = Path(tmp)
        for title, per_request, extra in setups:
            images = [jpeg(i) for i in range(per_request)]
            payload = v2_binary(images)
            process, url = serve(model_dir, args.server_core, extra)
            try:
                check(url, payload, expected_logits(model_dir, images))
                rates, p99s = [], []
                for _ in range(args.slices):
                    result = run_wrk(f"{url}/v2/models/{MODEL}/infer", payload, args, args.seconds)
                    if result.errors:
                        raise RuntimeError(f"{title}: {result.errors} errors")
                    rates.append(result.requests * per_request / result.duration_s)
                    p99s.append(result.p99_us / 1000)
            finally:
                process.terminate()
                process.wait(timeout=30)
            rows.append(
                (title, statistics.median(rates), min(rates), max(rates), statistics.median(p99s))
            )
            print(f"{title}: {statistics.median(rates):.0f} images/s", flush=True)
    lines = [
        "# Images per second: the image classifier example over V2 binary",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC by"
        " `python -m benchmarks.images`:"
        f" 320x240 JPEGs (quality 90) decoded, resized to 64x64 and normalised by the server,"
        f" a TinyCNN (torch.export) on the CPU; server on core {args.server_core}, wrk on core"
        f" {args.load_core}, {args.connections} connections, {args.slices} slices of"
        f" {args.seconds:g} s each.",
        "",
        "| set-up | images/s (median) | min..max | p99 latency per request |",
        "|---|---:|---:|---:|",
    ]
    for title, median, low, high, p99 in rows:
        lines.append(f"| {title} | {median:,.0f} | {low:,.0f}..{high:,.0f} | {p99:.1f} ms |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "images.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'images.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
