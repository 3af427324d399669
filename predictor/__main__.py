"""`python -m predictor`: serve a PyTorch model with KServe's ModelServer.

Every KServe ModelServer option works (this parser extends `kserve.model_server.parser`);
the options below choose the model and how it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings

from kserve import model_server
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
from kserve.model_server import ModelServer

from . import edge, grpc_service, http_server, logs, metrics, tracing
from .compiled import MODES as COMPILE_MODES
from .handlers import resolve_handler
from .loader import BUNDLED_MODEL_DIR, ModelLoadError
from .model import ModelOptions


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictor",
        description="Serve a PyTorch model (TorchScript, torch.export .pt2, or a state dict "
        "plus its module class) over KServe's V1, V2 REST/binary and gRPC protocols, and the "
        "legacy /api/predict.",
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_dir",
        default=None,
        help="Directory (or file) of the model: one *.pt2, TorchScript *.pt/*.pth, or state dict "
        "(with --model_class), plus an optional model.json signature. Default: $STORAGE_URI as "
        "KServe's storage initializer leaves it in /mnt/models, else the bundled "
        f"{BUNDLED_MODEL_DIR.name} demo model.",
    )
    model.add_argument(
        "--model_class",
        default=None,
        help="Module class for a state dict, as package.module:Class (importable from the model "
        "directory or the working directory). Loaded with weights_only=True.",
    )
    model.add_argument(
        "--handler",
        default=None,
        help="Serve this TorchModel subclass instead, as package.module:Class (importable from "
        "the model directory or the working directory; also 'handler' in model.json). Its "
        "preprocess/postprocess see every protocol's named arrays, BYTES included.",
    )
    model.add_argument(
        "--compile",
        action="store_true",
        help="Run the module through torch.compile at load and compile it for the batch sizes "
        "it will serve before reporting ready (a torch.export program or a state dict's module; "
        "an AOTInductor .pt2 package is loaded compiled as it is).",
    )
    model.add_argument(
        "--compile_mode",
        default="default",
        choices=list(COMPILE_MODES),
        help="torch.compile mode.",
    )
    model.add_argument(
        "--compile_cache_dir",
        default=None,
        help="Directory for Inductor's caches (TORCHINDUCTOR_CACHE_DIR): a restart with the same "
        "directory reuses the compiled code.",
    )
    model.add_argument(
        "--compile_fallback",
        action="store_true",
        help="If --compile fails, serve the eager module (logged) instead of stopping.",
    )
    model.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="Where the model runs; auto picks cuda when a GPU is visible.",
    )
    model.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="Precision the model computes in; clients still send and receive their own dtypes.",
    )
    runtime = parser.add_argument_group("inference")
    runtime.add_argument(
        "--inference_threads",
        default=1,
        type=positive_int,
        help="Threads running the model off the event loop (torch's own threads split the cores).",
    )
    runtime.add_argument(
        "--inline_max_us",
        default=200.0,
        type=non_negative_float,
        help="Run a forward call on the event loop when the model's measured cost predicts it "
        "takes at most this many microseconds (cheaper than a thread hand-off); slower calls go "
        "to the inference threads. 0 sends every call to the threads.",
    )
    runtime.add_argument(
        "--max_batch_size",
        default=1,
        type=positive_int,
        help="Adaptive batching: stack concurrent requests up to this many rows (1 = off).",
    )
    runtime.add_argument(
        "--max_batch_delay_ms",
        default=5.0,
        type=non_negative_float,
        help="Adaptive batching: longest wait for more requests after the first one.",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max_request_bytes",
        default=64 * 1024 * 1024,
        type=positive_int,
        help="Largest request body (REST, refused with 413 before it is read whole) and gRPC "
        "message, unless --grpc_max_receive_message_length is given.",
    )
    limits.add_argument(
        "--max_tensor_elements",
        default=64 * 1024 * 1024,
        type=positive_int,
        help="Most elements one input tensor may have (413 past it; gRPC: RESOURCE_EXHAUSTED).",
    )
    limits.add_argument(
        "--max_inflight",
        default=0,
        type=int,
        help="Most inference requests in flight; past it, 503 with Retry-After (gRPC: "
        "UNAVAILABLE) at once, so the autoscaler sees the load. 0 means no limit.",
    )
    shutdown = parser.add_argument_group("shutdown")
    shutdown.add_argument(
        "--drain_seconds",
        default=5.0,
        type=non_negative_float,
        help="After SIGTERM, readiness fails at once and the server goes on accepting and "
        "answering (with Connection: close) for this long, while Kubernetes takes the pod "
        "out of its endpoints; then it stops accepting, without resetting any connection "
        "already accepted.",
    )
    shutdown.add_argument(
        "--grace_period",
        default=30,
        type=int,
        help="Seconds to finish the requests in flight once the server stops accepting "
        "(--drain_seconds + --grace_period must fit the pod's terminationGracePeriodSeconds).",
    )
    connections = parser.add_argument_group("connections")
    connections.add_argument(
        "--header_timeout",
        default=10.0,
        type=positive_float,
        help="Seconds a connection may take to send a request's headers (from its first "
        "byte, or from connecting); past it, 408 and the connection is closed.",
    )
    connections.add_argument(
        "--body_timeout",
        default=30.0,
        type=positive_float,
        help="Seconds a request body may go without data; past it, 408 and the "
        "connection is closed.",
    )
    connections.add_argument(
        "--max_connections",
        default=2048,
        type=positive_int,
        help="Most open HTTP connections; past it, a new connection gets 503 with "
        "Retry-After and is closed. (Idle keep-alive connections close after "
        "--timeout_keep_alive.)",
    )
    logging_options = parser.add_argument_group("logging")
    logging_options.add_argument(
        "--enable_access_log",
        default=False,
        type=lambda text: text.lower() in ("1", "true", "yes"),
        help="Also write uvicorn's access log (the JSON request log is always on).",
    )
    logging_options.add_argument(
        "--log_level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Level of the predictor's JSON request log and of its own log lines.",
    )
    # KServe logs preprocess/predict/postprocess latency per request by default; here it is
    # opt-in, so a request costs one log line.
    parser.set_defaults(enable_latency_logging=False)
    return parser


def use_uvloop(event_loop: str) -> None:
    """KServe's --event-loop option reaches uvicorn only when uvicorn owns the loop, which
    it does not under ModelServer (asyncio.run); set the policy so the choice holds."""
    if event_loop == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # ModelServer.start asks for the current loop before asyncio.run makes its own.
    asyncio.set_event_loop(asyncio.new_event_loop())


def main(argv: list[str] | None = None) -> int:
    # Deprecations inside the pinned dependencies, not actionable by a user of the server.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated")
    args = build_parser().parse_args(argv)
    logs.setup_predictor_logger(args.log_level)
    if args.workers != 1:
        # KServe's workers are spawned processes that rebuild KServe's app from scratch, so
        # they would serve without this predictor's model and routes.
        print(
            f"error: --workers {args.workers} is not supported: one process serves the model; "
            "scale out with replicas (the chart's autoscaling) and use --inference_threads",
            file=sys.stderr,
        )
        return 2
    options = ModelOptions(
        model_dir=args.model_dir,
        model_class=args.model_class,
        device=args.device,
        dtype=args.dtype,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        inference_threads=args.inference_threads,
        max_inflight=args.max_inflight,
        inline_max_us=args.inline_max_us,
        max_tensor_elements=args.max_tensor_elements,
        compile=args.compile,
        compile_mode=args.compile_mode,
        compile_cache_dir=args.compile_cache_dir,
        compile_fallback=args.compile_fallback,
    )
    try:
        model = resolve_handler(args.handler, args.model_dir)(args.model_name, options)
        model.load()
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics.prepare(model.name)
    front = edge.install(
        model_server.app,
        {model.name: model},
        args.max_request_bytes,
        latency_logging=args.enable_latency_logging,
        body_timeout=args.body_timeout,
    )
    http_server.install(
        drain_seconds=args.drain_seconds,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        model_name=model.name,
        on_drain=(model.health.start_draining,),
        front=front.around,
    )
    grpc_service.install()
    # KServe's gRPC server reads its limits from KServe's own parsed arguments.
    for limit in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        if getattr(args, limit) == MAX_GRPC_MESSAGE_LENGTH:
            setattr(model_server.args, limit, args.max_request_bytes)
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        grace_period=args.grace_period,
    )
    # ModelServer configures KServe's logging; quiet its per-request lines after that.
    logs.configure(args.log_level, args.enable_access_log, args.enable_latency_logging)
    tracing.configure()
    use_uvloop(args.event_loop)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
