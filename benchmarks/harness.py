"""Side-by-side benchmark: this predictor against stock KServe, the original FastAPI app,
a raw ASGI ceiling, Seldon MLServer and NVIDIA Triton (pytriton), all doing x*2.

Every server runs on 127.0.0.1 pinned to one core (`--server-core`); the load generator
(wrk with a Lua body for HTTP, `benchmarks.grpc_load` for gRPC) is pinned to another
(`--load-core`). Each (scenario, server) pair is measured in several slices, interleaved
so machine noise hits every server alike. Server CPU time per request comes from
/proc/<pid>/stat (utime+stime of every process in the server's session).

Writes `<out>/latest.md` (table, machine, target checks) and `<out>/latest.png`.
Start it with `benchmarks/run.sh`, which installs wrk, matplotlib and the peers' venvs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import requests

from tests.serving import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
MODEL = "model"
V2_PATH = f"/v2/models/{MODEL}/infer"
V1_PATH = f"/v1/models/{MODEL}:predict"


# ---------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    title: str
    protocol: str  # "http" or "grpc"
    path: str = ""
    size: int = 0
    reference: str = "stock"  # the server whose numbers the ratios divide by


SCENARIOS = [
    Scenario("v1_small", "V1, 5 floats", "http", V1_PATH, 5),
    Scenario("v1_100k", "V1, 100k floats", "http", V1_PATH, 100_000),
    Scenario("v2_json_100k", "V2 REST JSON, 100k FP32", "http", V2_PATH, 100_000),
    Scenario("v2_binary_100k", "V2 REST binary, 100k FP32", "http", V2_PATH, 100_000),
    Scenario("grpc_100k", "gRPC V2 raw contents, 100k FP32", "grpc", size=100_000),
    Scenario("api_predict_small", "/api/predict, 5 ints", "http", "/api/predict/", 5, "fastapi"),
]


@dataclass
class Payload:
    values: np.ndarray
    body: bytes = b""
    content_type: str = "application/json"
    header_length: int | None = None


def make_payload(scenario: Scenario) -> Payload:
    """The request body a scenario sends, and the input values it encodes."""
    if scenario.name == "api_predict_small":
        values = np.arange(1, scenario.size + 1, dtype=np.float32)
        return Payload(values, orjson.dumps({"values_list": [int(v) for v in values]}))
    rng = np.random.default_rng(0)
    data = np.round(rng.random(scenario.size) * 100, 3).tolist()  # e.g. 63.696
    values = np.asarray(data, dtype=np.float32)
    tensor = {"name": "input-0", "shape": [scenario.size], "datatype": "FP32"}
    if scenario.name.startswith("v1"):
        return Payload(values, orjson.dumps({"instances": data}))
    if scenario.name == "v2_json_100k":
        return Payload(values, orjson.dumps({"inputs": [{**tensor, "data": data}]}))
    if scenario.name == "v2_binary_100k":
        raw = values.astype("<f4").tobytes()
        header = orjson.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                "parameters": {"binary_data_output": True},
            }
        )
        return Payload(values, header + raw, "application/octet-stream", len(header))
    return Payload(values)  # gRPC: grpc_load builds the request itself


def response_values(scenario: Scenario, response: requests.Response) -> np.ndarray:
    """The numbers an HTTP answer carries, flattened, whatever its protocol."""
    header_length = response.headers.get("Inference-Header-Content-Length")
    if header_length is not None:
        return np.frombuffer(response.content[int(header_length) :], dtype="<f4")
    body = response.json()
    if "predictions" in body:
        return np.asarray(body["predictions"], dtype=np.float32).ravel()
    if "result" in body:
        return np.asarray(body["result"]["tensor_list"], dtype=np.float32).ravel()
    return np.asarray(body["outputs"][0]["data"], dtype=np.float32).ravel()


# ---------------------------------------------------------------- servers


@dataclass
class Ports:
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


def venv_python(name: str) -> Path:
    return REPO_ROOT / name / "bin" / "python"


def python_libdir(python: Path) -> str:
    """LIBDIR of a Python: Triton's Python backend stub must load that libpython."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


@dataclass
class ServerSpec:
    name: str
    description: str
    scenarios: set[str]
    command: Callable[[Ports], list[str]]
    ready_path: str | None = f"/v2/models/{MODEL}/ready"  # None: gRPC ServerReady
    env: Callable[[Ports], dict[str, str]] = lambda ports: {}
    venv: str | None = None  # a peer's own venv, created by run.sh

    def unavailable(self) -> str | None:
        if self.venv and not venv_python(self.venv).exists():
            return f"{self.venv} missing (benchmarks/run.sh could not install it here)"
        return None


ALL_HTTP = {s.name for s in SCENARIOS if s.protocol == "http"}
KSERVE_SCENARIOS = {"v1_small", "v1_100k", "v2_json_100k", "v2_binary_100k", "grpc_100k"}


def kserve_args(ports: Ports) -> list[str]:
    return [
        "--model_name",
        MODEL,
        "--http_port",
        str(ports.http),
        "--grpc_port",
        str(ports.grpc),
        "--workers",
        "1",
    ]


SERVERS = [
    ServerSpec(
        "predictor",
        "this repo's predictor (`python -m predictor`, bundled doubler model)",
        KSERVE_SCENARIOS | {"api_predict_small"},
        lambda p: [sys.executable, "-m", "predictor", *kserve_args(p)],
    ),
    ServerSpec(
        "stock",
        "plain `kserve.Model` doing x*2 the way KServe's samples do",
        KSERVE_SCENARIOS,
        lambda p: [sys.executable, "benchmarks/baselines/stock_kserve.py", *kserve_args(p)],
    ),
    ServerSpec(
        "fastapi",
        "the original FastAPI + pydantic `/api/predict/` app",
        {"api_predict_small"},
        lambda p: [sys.executable, "benchmarks/baselines/fastapi_app.py", "--port", str(p.http)],
        ready_path="/health",
    ),
    ServerSpec(
        "raw_asgi",
        "raw ASGI app on uvicorn answering a constant (the ceiling; does no work)",
        ALL_HTTP,
        lambda p: [sys.executable, "benchmarks/baselines/raw_asgi.py", "--port", str(p.http)],
        ready_path="/",
    ),
    ServerSpec(
        "grpc_ceiling",
        "grpcio (asyncio) server answering a constant 100k FP32 ModelInferResponse (the gRPC "
        "ceiling; does no work)",
        {"grpc_100k"},
        lambda p: [
            sys.executable,
            "benchmarks/baselines/grpc_ceiling.py",
            "--port",
            str(p.grpc),
        ],
        ready_path=None,
    ),
    ServerSpec(
        "mlserver",
        "Seldon MLServer custom runtime doing x*2 (NumpyCodec)",
        {"v2_json_100k", "grpc_100k"},
        lambda p: [
            str(REPO_ROOT / ".venv-bench-mlserver/bin/mlserver"),
            "start",
            "benchmarks/peers/mlserver",
        ],
        env=lambda p: {
            "MLSERVER_HTTP_PORT": str(p.http),
            "MLSERVER_GRPC_PORT": str(p.grpc),
            "MLSERVER_METRICS_PORT": str(p.metrics),
        },
        venv=".venv-bench-mlserver",
    ),
    ServerSpec(
        "triton",
        "NVIDIA Triton via pytriton, Python function doing x*2",
        {"v2_json_100k", "v2_binary_100k", "grpc_100k"},
        lambda p: [
            str(venv_python(".venv-bench-pytriton")),
            "benchmarks/peers/pytriton_server.py",
            "--http_port",
            str(p.http),
            "--grpc_port",
            str(p.grpc),
            "--metrics_port",
            str(p.metrics),
        ],
        env=lambda p: {
            "LD_LIBRARY_PATH": python_libdir(venv_python(".venv-bench-pytriton")),
            "PYTRITON_HOME": str(REPO_ROOT / "benchmarks/results/raw/pytriton-home"),
        },
        venv=".venv-bench-pytriton",
    ),
]


def grpc_server_ready(target: str) -> bool:
    """ServerReady answered (any answer) by a server that speaks only gRPC."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        server_ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        try:
            server_ready(b"", timeout=1)
        except grpc.RpcError:
            return False
    return True


class RunningServer:
    """One server process (and its children) in a session of its own, pinned to a core."""

    def __init__(self, spec: ServerSpec, core: int, log_dir: Path) -> None:
        self.spec = spec
        self.ports = Ports()
        self.log_path = log_dir / f"{spec.name}.log"
        self.process: subprocess.Popen | None = None
        self.core = core

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def start(self, timeout: float = 120.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env(self.ports)}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(self.core), *self.spec.command(self.ports)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}, see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"not ready after {timeout:.0f}s, see {self.log_path}")

    def ready(self) -> bool:
        if self.spec.ready_path is None:
            return grpc_server_ready(self.grpc_target)
        try:
            return requests.get(self.url + self.spec.ready_path, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(pgid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """utime+stime of every live process in this server's session, plus reaped children."""
        assert self.process is not None
        ticks = 0
        for stat_path in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_path.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == self.process.pid:  # session id
                ticks += int(fields[11]) + int(fields[12])
                if int(stat_path.parent.name) == self.process.pid:
                    ticks += int(fields[13]) + int(fields[14])  # cutime + cstime
        return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- load


@dataclass
class Slice:
    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    errors: int
    cpu_s: float


WRK_LINE = re.compile(r"BENCH_RESULT (.*)")


def run_wrk(url: str, payload: Payload, args: argparse.Namespace, seconds: float) -> Slice:
    body_file = args.raw_dir / f"body-{abs(hash(payload.body))}.bin"
    if not body_file.exists():
        body_file.write_bytes(payload.body)
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_CONTENT_TYPE": payload.content_type,
        "BENCH_HEADER_LENGTH": "" if payload.header_length is None else str(payload.header_length),
    }
    command = [
        "taskset",
        "-c",
        str(args.load_core),
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "10s",
        "-s",
        str(BENCH_DIR / "wrk_post.lua"),
        url,
    ]
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    match = WRK_LINE.search(out)
    if not match:
        raise RuntimeError(f"wrk printed no result: {out[-300:]!r}")
    values = dict(item.split("=") for item in match.group(1).split())
    return Slice(
        requests=int(values["requests"]) - int(values["status_errors"]),
        duration_s=int(values["duration_us"]) / 1e6,
        p50_us=float(values["p50_us"]),
        p99_us=float(values["p99_us"]),
        errors=int(values["status_errors"]) + int(values["socket_errors"]),
        cpu_s=0.0,
    )


def run_grpc(target: str, size: int, args: argparse.Namespace, seconds: float) -> Slice:
    command = [
        "taskset",
        "-c",
        str(args.load_core),
        sys.executable,
        "-m",
        "benchmarks.grpc_load",
        "--target",
        target,
        "--model",
        MODEL,
        "--size",
        str(size),
        "--concurrency",
        str(args.connections),
        "--seconds",
        str(seconds),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpc_load failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Slice(
        result["requests"],
        result["duration_s"],
        result["p50_us"],
        result["p99_us"],
        result["errors"],
        0.0,
    )


def measure(
    server: RunningServer, scenario: Scenario, payload: Payload, args, seconds: float
) -> Slice:
    cpu_before = server.cpu_seconds()
    if scenario.protocol == "grpc":
        result = run_grpc(server.grpc_target, scenario.size, args, seconds)
    else:
        result = run_wrk(server.url + scenario.path, payload, args, seconds)
    result.cpu_s = server.cpu_seconds() - cpu_before
    return result


def check(server: RunningServer, scenario: Scenario, payload: Payload) -> None:
    """One request, answer compared with x*2: a server that computes wrongly is not timed."""
    if scenario.protocol == "grpc":
        # tritonclient's gRPC protos clash with kserve's: imported only where needed.
        from benchmarks import grpc_load

        got = grpc_load.infer_once(server.grpc_target, MODEL, payload.values).ravel()
        if server.spec.name == "grpc_ceiling":
            return  # the ceiling answers a constant by design
    else:
        headers = {"Content-Type": payload.content_type}
        if payload.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(payload.header_length)
        response = requests.post(
            server.url + scenario.path, data=payload.body, headers=headers, timeout=30
        )
        response.raise_for_status()
        if server.spec.name == "raw_asgi":
            return  # the ceiling answers a constant by design
        got = response_values(scenario, response)
    if got.shape != payload.values.shape or not np.allclose(got, payload.values * 2, rtol=1e-6):
        raise ValueError(f"wrong answer: {got[:5]}... for {payload.values[:5]}...")


# ---------------------------------------------------------------- report


def machine_description() -> list[str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.*)", lscpu)
    versions = []
    for package in ("torch", "kserve"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- CPU: {model.group(1) if model else platform.processor()}, {os.cpu_count()} cores",
        f"- {platform.platform()}; Python {platform.python_version()}; " + ", ".join(versions),
        f"- load: {(wrk.stdout + wrk.stderr).splitlines()[0].strip()}; gRPC: benchmarks.grpc_load",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; git {commit}",
    ]


@dataclass
class Row:
    scenario: Scenario
    server: str
    slices: list[Slice] = field(default_factory=list)
    failure: str = ""

    @property
    def rps(self) -> float:
        time_s = sum(s.duration_s for s in self.slices)
        return sum(s.requests for s in self.slices) / time_s if time_s else 0.0

    @property
    def cpu_us(self) -> float:
        count = sum(s.requests for s in self.slices)
        return sum(s.cpu_s for s in self.slices) / count * 1e6 if count else float("nan")

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.slices)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.slices)


TARGETS = [  # (scenario, metric, at least / at most, bound, compared with)
    # "compared with" is a server in the same scenario, or "scenario/server".
    ("v1_small", "cpu", "<=", 0.6, "stock"),
    ("v1_small", "rps", ">=", 0.4, "raw_asgi"),
    ("v1_small", "cpu", "<=", 2.5, "raw_asgi"),
    ("api_predict_small", "rps", ">=", 1.5, "fastapi"),
    ("api_predict_small", "rps", ">=", 0.4, "raw_asgi"),
    ("api_predict_small", "cpu", "<=", 2.5, "raw_asgi"),
    ("v2_json_100k", "rps", ">=", 10.0, "stock"),
    ("v2_binary_100k", "rps", ">=", 20.0, "stock"),
    ("v1_100k", "rps", ">=", 1.5, "stock"),
    ("grpc_100k", "rps", ">=", 1.5, "stock"),
    ("grpc_100k", "rps", ">=", 0.7, "grpc_ceiling"),
    ("grpc_100k", "cpu", "<=", 1.3, "v2_binary_100k/predictor"),
]


def ratio(row: Row, reference: Row | None, metric: str) -> float | None:
    if reference is None or not row.slices or not reference.slices:
        return None
    if metric == "rps":
        return row.rps / reference.rps if reference.rps else None
    return row.cpu_us / reference.cpu_us if reference.cpu_us else None


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def write_report(rows: list[Row], args: argparse.Namespace, skipped: dict[str, str]) -> str:
    by_key = {(r.scenario.name, r.server): r for r in rows}
    lines = [
        "# Benchmark: predictor vs stock KServe and peers",
        "",
        f"`{args.command_line}`: {args.slices} interleaved slices of {args.seconds:g} s per "
        f"scenario and server, {args.connections} connections, server pinned to core "
        f"{args.server_core}, load generator to core {args.load_core}; one server worker.",
        "",
        *machine_description(),
        "",
        "req/s over all slices; p50/p99: median over slices; CPU: server CPU time (all its "
        "processes) per request. Ratios are to `stock` in the same run (`/api/predict`: to "
        "`fastapi`); the raw_asgi and grpc_ceiling rows are what the server software itself "
        "can do answering a constant.",
        "",
        "| scenario | server | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs ref | CPU vs ref |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        title = row.scenario.title
        if row.failure:
            lines.append(f"| {title} | {row.server} | failed: {row.failure} | | | | | |")
            continue
        reference = by_key.get((row.scenario.name, row.scenario.reference))
        errors = f" ({row.errors} errors)" if row.errors else ""
        lines.append(
            f"| {title} | {row.server} | {row.rps:,.0f}{errors} | {row.median('p50_us') / 1e3:.2f}"
            f" | {row.median('p99_us') / 1e3:.2f} | {row.cpu_us:,.0f} | "
            f"{fmt_ratio(ratio(row, reference, 'rps'))} | "
            f"{fmt_ratio(ratio(row, reference, 'cpu'))} |"
        )
    lines += ["", "## Targets (predictor vs reference, this run)", ""]
    for scenario, metric, op, bound, reference in TARGETS:
        other_scenario, _, other_server = reference.rpartition("/")
        row = by_key.get((scenario, "predictor"))
        ref = by_key.get((other_scenario or scenario, other_server))
        value = ratio(row, ref, metric) if row and ref else None
        if value is None:
            lines.append(f"- {scenario}: {metric} vs {reference}: not measured")
            continue
        met = value <= bound if op == "<=" else value >= bound
        what = "CPU/request" if metric == "cpu" else "req/s"
        verdict = "met" if met else "MISSED"
        lines.append(
            f"- {scenario}: {what} {value:.2f}x {reference} (target {op} {bound:g}x): {verdict}"
        )
    lines += ["", "## Against the peers (predictor req/s / peer req/s)", ""]
    for peer in ("mlserver", "triton"):
        for scenario in SCENARIOS:
            row, other = by_key.get((scenario.name, "predictor")), by_key.get((scenario.name, peer))
            value = ratio(row, other, "rps") if row and other else None
            if value is not None:
                state = "ahead" if value >= 1 else "TRAILS"
                lines.append(f"- {scenario.name} vs {peer}: {value:.2f}x ({state})")
    lines += ["", "## Servers", ""]
    for spec in SERVERS:
        note = f" — skipped: {skipped[spec.name]}" if spec.name in skipped else ""
        lines.append(f"- `{spec.name}`: {spec.description}{note}")
    return "\n".join(lines) + "\n"


def write_chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in SCENARIOS if any(r.scenario is s and r.slices for r in rows)]
    servers = [s.name for s in SERVERS if any(r.server == s.name and r.slices for r in rows)]
    width = 0.8 / max(len(servers), 1)
    figure, axes = plt.subplots(figsize=(12, 5))
    for index, server in enumerate(servers):
        heights = []
        for scenario in scenarios:
            match = [r for r in rows if r.scenario is scenario and r.server == server]
            heights.append(match[0].rps if match and match[0].slices else 0)
        positions = [i + index * width for i in range(len(scenarios))]
        axes.bar(positions, heights, width, label=server)
    axes.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(scenarios))])
    axes.set_xticklabels([s.title for s in scenarios], rotation=15, fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("requests/s (log scale)")
    axes.set_title("x*2 on 127.0.0.1, server on one core, 8 connections")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    servers = [s.name for s in SERVERS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 slices of 2 s (about 2 min)")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one slice")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per pair")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--scenarios", default=",".join(names), help=f"from {names}")
    parser.add_argument("--servers", default=",".join(servers), help=f"from {servers}")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    args.command_line = " ".join(["benchmarks/run.sh", *given])
    if args.quick:
        args.slices, args.seconds, args.warmup = 2, 2.0, 1.0
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in args.scenarios:
        if name not in names:
            parser.error(f"unknown scenario {name!r}; known: {names}")
    for name in args.servers:
        if name not in servers:
            parser.error(f"unknown server {name!r}; known: {servers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: run benchmarks/run.sh, which installs it", file=sys.stderr)
        return 2
    args.raw_dir = args.out / "raw"
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    specs = [s for s in SERVERS if s.name in args.servers]
    payloads = {s.name: make_payload(s) for s in scenarios}
    skipped = {s.name: reason for s in specs if (reason := s.unavailable())}

    running: dict[str, RunningServer] = {}
    rows: list[Row] = []
    try:
        for spec in specs:
            if spec.name in skipped or not spec.scenarios & set(args.scenarios):
                continue
            server = RunningServer(spec, args.server_core, args.raw_dir)
            running[spec.name] = server
            print(f"starting {spec.name} ...", flush=True)
            try:
                server.start()
            except (RuntimeError, TimeoutError) as error:
                skipped[spec.name] = f"did not start: {error}"
                print(f"  {spec.name}: {skipped[spec.name]}", flush=True)
                server.stop()
                del running[spec.name]

        for scenario in scenarios:
            for name, server in running.items():
                if scenario.name not in server.spec.scenarios:
                    continue
                row = Row(scenario, name)
                rows.append(row)
                try:
                    check(server, scenario, payloads[scenario.name])
                    if args.warmup > 0:
                        measure(server, scenario, payloads[scenario.name], args, args.warmup)
                except Exception as error:  # noqa: BLE001 - any failure excludes the pair
                    row.failure = f"{type(error).__name__}: {str(error)[:120]}".replace("\n", " ")
                    print(f"  {scenario.name} / {name}: {row.failure}", flush=True)

        for slice_index in range(args.slices):
            for row in rows:
                if row.failure:
                    continue
                result = measure(
                    running[row.server],
                    row.scenario,
                    payloads[row.scenario.name],
                    args,
                    args.seconds,
                )
                row.slices.append(result)
                print(
                    f"slice {slice_index + 1}/{args.slices} {row.scenario.name:18} "
                    f"{row.server:10} {result.requests / result.duration_s:9,.1f} req/s "
                    f"{result.cpu_s / max(result.requests, 1) * 1e6:9,.0f} CPU µs/req"
                    + (f" {result.errors} errors" if result.errors else ""),
                    flush=True,
                )
    finally:
        for server in running.values():
            server.stop()

    report = write_report(rows, args, skipped)
    (args.out / "latest.md").write_text(report)
    try:
        write_chart(rows, args.out / "latest.png")
    except ImportError:
        print("matplotlib missing: no chart (benchmarks/run.sh installs it)", file=sys.stderr)
    print(report)
    print(f"wrote {args.out / 'latest.md'} and {args.out / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
