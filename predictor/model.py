"""TorchModel: a `kserve.Model` that serves any PyTorch module.

`load` finds and loads the model and answers one warm-up inference before the model is
ready. Every protocol (routes.py for REST, grpc_service.py for gRPC) decodes its request
into named numpy arrays and calls `run`: `preprocess` -> `predict` (the module, off the
event loop unless the call is cheaper than a thread hand-off) -> `postprocess`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from kserve import Model
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME

from . import classification, statistics, tracing
from .batching import Batcher, ForwardTiming
from .bytes_tensors import is_bytes
from .compiled import CompileError, compile_module, served_batch_sizes
from .compiled import warm_up as compile_warm_up
from .cpus import CoreClock, available_cpus
from .datatypes import TORCH_DTYPES, numpy_dtype, v2_datatype
from .decoders import Decoders, build_decoders
from .errors import Overloaded, PayloadTooLarge, first_line
from .health import Health, poisons_the_device
from .loader import LoadedModel, ModelLoadError, load_model, resolve_model_dir
from .metrics import BATCH_DELAY, BATCH_SIZE, FORWARD, IN_FLIGHT, MODEL_HEALTHY, QUEUE, REJECTED
from .signature import Signature, SignatureError, TensorSpec

logger = logging.getLogger("predictor")


@dataclass
class ModelOptions:
    model_dir: str | None = None
    model_class: str | None = None
    device: str = "auto"
    dtype: str | None = None
    max_batch_size: int = 1
    max_batch_delay_ms: float = 5.0
    inference_threads: int = 1
    max_inflight: int = 0  # 0: no limit
    # Forwards predicted to take at most this long run on the event loop (0: never).
    inline_max_us: float = 200.0
    max_tensor_elements: int = 64 * 1024 * 1024
    # --compile: torch.compile at load (compiled.py).
    compile: bool = False
    compile_mode: str = "default"
    compile_cache_dir: str | None = None
    compile_fallback: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


class ModelRejectedInput(InvalidInput):
    """The module itself raised on the input (wrong dtype or shape for its layers, or a
    guard of an exported program)."""


def rejects_input(error: BaseException) -> bool:
    """Whether an error raised by the module says the input does not fit it: torch's shape
    and dtype errors, or a failed guard of a torch.export program."""
    if isinstance(error, AssertionError):
        return str(error).startswith("Guard failed")
    return isinstance(error, (RuntimeError, ValueError, TypeError, IndexError))


class TorchModel(Model):
    def __init__(self, name: str, options: ModelOptions | None = None) -> None:
        super().__init__(name)
        self.options = options or ModelOptions()
        self.loaded: LoadedModel | None = None
        self.labels: list[str] | None = None
        self.device = torch.device("cpu")
        self.compute_dtype: torch.dtype | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: Batcher | None = None
        self.inflight = 0
        self.health = Health(name)
        self.cost = ForwardCost()
        self._warm_up_inputs: list[np.ndarray] = []
        self._memory_failures = 0  # out-of-memory errors in a row the warm-up input failed too
        self._in_flight_gauge = IN_FLIGHT.labels(name)
        # Replaced by the registered one once loaded: the warm-up is not counted.
        self.statistics = statistics.ModelStatistics(name)
        self._queue_seconds = QUEUE.labels(name)
        self._forward_seconds: Any = _NOT_COUNTED  # FORWARD's once loaded, as statistics
        self._stage_seconds = [
            histogram.labels(model_name=name)
            for histogram in (PRE_HIST_TIME, PREDICT_HIST_TIME, POST_HIST_TIME)
        ]
        self.decoders = Decoders({}, {})
        self.wire_inputs: list[TensorSpec] = []
        self.input_names: list[str] = []
        self.input_datatypes: list[str | None] = []

    # ---- loading -------------------------------------------------------------------------

    def load(self) -> bool:
        """Load the model and answer one warm-up inference; raises ModelLoadError if not."""
        options = self.options
        self.device = resolve_device(options.device)
        # As many torch threads as cores this process may really use, no more.
        torch.set_num_threads(available_cpus())
        self.loaded = load_model(
            resolve_model_dir(options.model_dir), options.model_class, self.device
        )
        self.labels = classification.read_labels(self.loaded.path.parent)
        try:
            self.decoders = build_decoders(self.loaded.signature, self.loaded.path.parent)
        except SignatureError as error:
            raise ModelLoadError(str(error)) from None
        # The inputs as clients send them (a decoded image or text input is BYTES), fixed
        # from here on: metadata, and the names and datatypes V1 requests are read against.
        self.wire_inputs = self.decoders.wire_inputs(self.signature.inputs)
        self.input_names = [spec.name for spec in self.wire_inputs]
        self.input_datatypes = [spec.datatype for spec in self.wire_inputs]
        if options.dtype and options.dtype != "float32":
            self.compute_dtype = TORCH_DTYPES[options.dtype]
            self.loaded.module.to(self.compute_dtype)
        self._executor = ThreadPoolExecutor(
            max_workers=options.inference_threads, thread_name_prefix="inference"
        )
        # A batch never grows past what the model's first dimension accepts.
        max_batch = min(options.max_batch_size, self.signature.batch_limit() or math.inf)
        if max_batch > 1:
            self._batcher = Batcher(
                self.forward,
                int(max_batch),
                options.max_batch_delay_ms / 1000.0,
                on_batch=self._batched,
            )
        if options.compile:
            self._compile(int(max_batch))
        self._warm_up()
        self.statistics = statistics.register(self.name)
        self._forward_seconds = FORWARD.labels(self.name)
        logger.info(
            "loaded %s model %s from %s on %s",
            self.loaded.kind,
            self.name,
            self.loaded.path,
            self.device,
        )
        self.ready = True
        MODEL_HEALTHY.labels(self.name).set(1)
        return True

    async def healthy(self) -> bool:
        """Ready once loaded and warmed up, until SIGTERM or a failure that breaks the
        model for good (health.py); nothing a client sends changes it."""
        return self.ready and self.health.serving()

    def _compile(self, max_batch: int) -> None:
        """torch.compile the module and compile it for every batch size to be served, or
        (--compile_fallback) go on with the eager module."""
        assert self.loaded is not None
        options, eager = self.options, self.loaded.module
        try:
            self.loaded.module = compile_module(
                eager,
                self.loaded.kind,
                options.compile_mode,
                dynamic=max_batch > 1,
                cache_dir=options.compile_cache_dir,
            )
            sizes = [rows for rows in served_batch_sizes(max_batch) if self._takes_rows(rows)]
            compile_warm_up(lambda rows: self.forward(self._zeros(rows)), sizes)
        except CompileError as error:
            if not options.compile_fallback:
                raise ModelLoadError(str(error)) from None
            logger.warning("%s; serving the eager module (--compile_fallback)", error)
            self.loaded.module = eager
            return
        logger.info("compiled %s with torch.compile for batch sizes %s", self.name, sizes)

    def _takes_rows(self, rows: int) -> bool:
        try:
            for spec, array in zip(self.signature.inputs, self._zeros(rows), strict=True):
                if spec.declared_shape:
                    spec.check_shape(array.shape)
        except InvalidInput:
            return False
        return True

    def _zeros(self, rows: int | None = None) -> list[np.ndarray]:
        """Zeros shaped like the signature (its example shape, else sizes it accepts), with
        `rows` in the first dimension when that dimension is dynamic."""
        arrays = []
        for spec in self.signature.inputs:
            shape = list(
                spec.example_shape or [_warm_up_size(spec, axis) for axis in range(len(spec.shape))]
            )
            if rows is not None and shape and spec.shape and spec.shape[0] < 0:
                shape[0] = rows
            arrays.append(np.zeros(shape, dtype=numpy_dtype(spec.datatype, spec.name)))
        return arrays

    def _warm_up(self) -> None:
        """One inference on zeros shaped like the signature, so the first request is fast
        and a model that cannot run fails at start-up instead of at the first request.
        Outputs nobody declared are learnt from it."""
        arrays = self._zeros()
        try:
            outputs = self.forward(arrays)
        except Exception as error:
            shapes = ", ".join(
                f"{s.name} {s.datatype} {list(a.shape)}"
                for s, a in zip(self.signature.inputs, arrays, strict=False)
            )
            raise ModelLoadError(
                f"warm-up inference ({shapes}) failed: {first_line(error)}; describe the model's "
                "inputs in model.json"
            ) from None
        self._warm_up_inputs = arrays
        self.signature.learn_outputs(outputs)

    def unload(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.ready = False

    # ---- metadata ------------------------------------------------------------------------

    @property
    def signature(self) -> Signature:
        assert self.loaded is not None, "model not loaded"
        return self.loaded.signature

    @property
    def module(self) -> torch.nn.Module:
        assert self.loaded is not None, "model not loaded"
        return self.loaded.module

    def get_input_types(self) -> list[dict]:
        """The inputs as clients send them (a decoded image or text input is BYTES)."""
        return [spec.metadata() for spec in self.wire_inputs]

    def get_output_types(self) -> list[dict]:
        return [spec.metadata() for spec in self.signature.outputs]

    # ---- the core: named arrays in, named arrays out -----------------------------------------

    def order_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Inputs in forward() order; a missing or unknown name is the client's error."""
        expected = self.signature.input_names
        unknown = [name for name in inputs if name not in expected]
        missing = [name for name in expected if name not in inputs]
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"unknown input {', '.join(map(repr, unknown))}")
            if missing:
                problems.append(f"missing input {', '.join(map(repr, missing))}")
            raise InvalidInput(f"{'; '.join(problems)}; the model takes {expected}")
        return [inputs[name] for name in expected]

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named inputs without blocking the event loop.

        Refuses work past --max_inflight (503, so an autoscaler sees the pressure and
        callers retry) and tensors past --max_tensor_elements (413).
        """
        arrays = self.order_inputs(inputs)
        limit = self.options.max_tensor_elements
        for name, array in zip(self.signature.input_names, arrays, strict=True):
            if is_bytes(array):
                raise InvalidInput(
                    f"input {name!r} holds strings or bytes (BYTES), but the model takes "
                    "numeric tensors; send numbers, or serve it with a --handler whose "
                    "preprocess turns the bytes into tensors"
                )
            if array.size > limit:
                REJECTED.labels(self.name, "too_large").inc()
                raise PayloadTooLarge(
                    f"input {name!r} has {array.size} elements; the limit is {limit} "
                    "(--max_tensor_elements)"
                )
        arrays = self.signature.conform(arrays)
        if self.options.max_inflight and self.inflight >= self.options.max_inflight:
            REJECTED.labels(self.name, "overload").inc()
            raise Overloaded(
                self.name, f"{self.inflight} requests in flight (--max_inflight); retry shortly"
            )
        self.inflight += 1
        self._in_flight_gauge.inc()
        timing = ForwardTiming(time.perf_counter_ns())
        try:
            if self._batcher is not None:
                outputs = await self._batcher.submit(arrays, timing)
            elif self.cost.predict_us(arrays) <= self.options.inline_max_us:
                outputs = self.forward(arrays, timing=timing)
            else:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(
                    self._executor, functools.partial(self.forward, arrays, True, timing)
                )
        finally:
            self.inflight -= 1
            self._in_flight_gauge.dec()
        first = arrays[0] if arrays else None
        self._served(timing, first.shape[0] if first is not None and first.ndim else 1)
        return outputs

    def _served(self, timing: ForwardTiming, rows: int) -> None:
        """A request's forward succeeded: its wait and its rows, in the statistics, the
        queue histogram and (when tracing) its queue and forward spans."""
        waited = timing.started_ns - timing.queued_ns
        self.statistics.waited(waited)
        self.statistics.inferred(rows)
        self._queue_seconds.observe(waited / 1e9)
        tracing.forward_spans(timing, rows)

    def _batched(self, rows: int, delay_ns: int) -> None:
        """A batch of `rows` rows starts, `delay_ns` after its first request arrived."""
        BATCH_SIZE.labels(self.name).observe(rows)
        BATCH_DELAY.labels(self.name).observe(delay_ns / 1e9)

    def forward(
        self,
        arrays: list[np.ndarray],
        off_loop: bool = False,
        timing: ForwardTiming | None = None,
    ) -> dict[str, np.ndarray]:
        """Call the module on numpy arrays: on the event loop when cheap, else (off_loop)
        on an inference thread; `timing` (if given) gets when it ran."""
        float_dtype = next((a.dtype for a in arrays if a.dtype.kind == "f"), np.dtype(np.float32))
        with torch.inference_mode():
            started_ns = time.perf_counter_ns()
            tensors = [self._to_device(array) for array in arrays]
            input_ns = time.perf_counter_ns()
            # On an inference thread, wall time would also count waiting for the core the
            # event loop holds: the busier the server, the costlier the model would look,
            # and the more it would be kept off the loop.
            clock = CoreClock(shared_core=off_loop)
            out_of_memory = None
            try:
                result = self.module(*tensors)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                infer_ns = time.perf_counter_ns()
                self.cost.record(arrays, clock.elapsed())
            except torch.OutOfMemoryError as error:
                out_of_memory = f"out of memory running the model: {first_line(error)}"
            except torch.AcceleratorError as error:
                if poisons_the_device(error):
                    self.health.mark_broken(first_line(error))
                raise InferenceError(f"the device failed: {first_line(error)}") from None
            except Exception as error:
                if not rejects_input(error):
                    raise  # a fault in the model: this request's 500, logged with its traceback
                described = ", ".join(f"{v2_datatype(a)} {list(a.shape)}" for a in arrays)
                raise ModelRejectedInput(
                    f"the model cannot run on the given input ({described}): {first_line(error)}"
                ) from None
            if out_of_memory is None:
                self._memory_failures = 0
                outputs = self._to_numpy(result, float_dtype)
                finished_ns = time.perf_counter_ns()
                first = arrays[0] if arrays else None
                rows = first.shape[0] if first is not None and first.ndim else 1
                self._forward_seconds.observe((infer_ns - input_ns) / 1e9)
                self.statistics.executed(
                    rows, input_ns - started_ns, infer_ns - input_ns, finished_ns - infer_ns
                )
                if timing is not None:
                    timing.started_ns, timing.finished_ns = started_ns, finished_ns
                    timing.batch_rows = rows
                return outputs
        # Out of the handler, so the failed call's tensors (held by its traceback) are gone.
        del tensors
        self._check_recovery(out_of_memory)
        raise InferenceError(out_of_memory)

    def _check_recovery(self, message: str) -> None:
        """After running out of memory, whether the model still runs on its warm-up input.
        One failure may be other requests' memory in use at that moment; only when the
        warm-up input runs out of memory after two such errors in a row is the device
        taken as not recovering."""
        if not self._warm_up_inputs:
            return  # during the warm-up itself: load() reports it
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            with torch.inference_mode():
                self.module(*[self._to_device(a) for a in self._warm_up_inputs])
        except torch.OutOfMemoryError:
            self._memory_failures += 1
            if self._memory_failures >= 2:
                self.health.mark_broken(f"out of memory even on the warm-up input ({message})")
            return
        except Exception:
            pass  # not memory: the request's own error is what the caller gets
        self._memory_failures = 0

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        if self.compute_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.compute_dtype)
        return tensor

    def _to_numpy(self, result: Any, float_dtype: np.dtype) -> dict[str, np.ndarray]:
        if isinstance(result, torch.Tensor):
            named = [(self.signature.output_name(0), result)]
        elif isinstance(result, (list, tuple)):
            named = [(self.signature.output_name(i), t) for i, t in enumerate(result)]
        elif isinstance(result, dict):
            named = list(result.items())
        else:
            raise InferenceError(f"the model returned {type(result).__name__}, not tensors")
        outputs = {}
        for name, tensor in named:
            if not isinstance(tensor, torch.Tensor):
                raise InferenceError(
                    f"model output {name!r} is {type(tensor).__name__}, not a tensor"
                )
            tensor = tensor.detach()
            # Reduced precision stays inside the server: clients get back what they sent.
            if tensor.dtype == torch.bfloat16 or (
                self.compute_dtype is not None and tensor.is_floating_point()
            ):
                tensor = tensor.to(torch.from_numpy(np.empty(0, float_dtype)).dtype)
            outputs[str(name)] = tensor.cpu().numpy()
        return outputs

    # ---- KServe's handlers: the one path of every protocol ---------------------------------

    async def run(self, inputs: dict[str, np.ndarray], headers: dict | None = None) -> dict:
        """What every protocol calls once it has decoded its request into named arrays:
        preprocess -> predict -> postprocess. Subclasses customise any of the three."""
        preprocess, predict, postprocess = self._stage_seconds  # KServe's own histograms
        start = time.perf_counter()
        inputs = await self.preprocess(inputs, headers)
        decoded = time.perf_counter()
        preprocess.observe(decoded - start)
        outputs = await self.predict(inputs, headers)
        predicted = time.perf_counter()
        predict.observe(predicted - decoded)
        outputs = await self.postprocess(outputs, headers)
        postprocess.observe(time.perf_counter() - predicted)
        return outputs

    async def preprocess(self, payload: Any, headers: dict | None = None) -> Any:
        """Named input arrays, as decoded from V1, V2 or gRPC -> what predict takes: the
        images and text model.json declares are decoded (decoders.py); a handler that
        overrides this and wants them decoded too calls super().preprocess first."""
        return await self.decoders.decode(payload) if self.decoders else payload

    async def predict(
        self, payload: Any, headers: dict | None = None, response_headers: dict | None = None
    ) -> Any:
        """Named input arrays -> named output arrays, by the module."""
        return await self.infer(payload)

    async def postprocess(
        self, result: Any, headers: dict | None = None, response_headers: dict | None = None
    ) -> Any:
        """Named output arrays -> what the protocol encodes (named arrays)."""
        return result


class _NotCounted:
    """Where the warm-up's timings go."""

    def observe(self, value: float) -> None:
        pass


_NOT_COUNTED = _NotCounted()


def ready_model(model: object, name: str) -> TorchModel:
    """The model a request names, ready to run: ModelNotFound (404, gRPC NOT_FOUND) when
    there is no such model, ModelNotReady (503, UNAVAILABLE) until it has loaded."""
    if not isinstance(model, TorchModel):
        raise ModelNotFound(name)
    if not model.ready:
        raise ModelNotReady(name)
    if model.health.broken:
        raise ModelNotReady(name, f"the model is broken ({model.health.broken}); restarting")
    return model


def _warm_up_size(spec, axis: int) -> int:
    """A size the dimension accepts: its fixed size, else 1 within any bounds it has."""
    if spec.shape[axis] >= 0:
        return spec.shape[axis]
    bound = spec.bounds[axis] if axis < len(spec.bounds) else None
    return max(1, bound[0]) if bound else 1


class ForwardCost:
    """What the module's forward costs, learnt from every call, to tell whether a call is
    cheap enough to run on the event loop (cheaper than decoding its own request) or must
    go to an inference thread so health probes and other requests are not held up.

    The model is linear: a fixed cost (the cheapest call seen) plus a cost per element
    (a moving average of what calls took beyond the fixed cost). Inputs larger than any
    seen so far are not predicted at all: they go to a thread, and teach the estimate.
    """

    def __init__(self) -> None:
        self.fixed_s = math.inf
        self.per_element_s = 0.0
        self.largest = 0

    def record(self, arrays: list[np.ndarray], seconds: float) -> None:
        elements = max(1, sum(a.size for a in arrays))
        self.fixed_s = min(self.fixed_s, seconds)
        sample = max(0.0, seconds - self.fixed_s) / elements
        self.largest = max(self.largest, elements)
        # A moving average: it forgets a slow first call (TorchScript optimises on the first
        # calls of each shape) and follows a model whose cost changes.
        self.per_element_s += 0.2 * (sample - self.per_element_s)

    def predict_us(self, arrays: list[np.ndarray]) -> float:
        elements = max(1, sum(a.size for a in arrays))
        if elements > self.largest:
            return math.inf
        return (self.fixed_s + self.per_element_s * elements) * 1e6
