"""Triton's statistics extension: per-model counts and cumulative durations since start.

`GET /v2/models/{name}/stats` and `GET /v2/models/stats` answer Triton's
`$stats_model_response` (docs/protocol/extension_statistics.md in triton-inference-server),
so tools written for Triton (perf_analyzer, model analyzer, tritonclient's
`get_inference_statistics`) read it:

- `success` / `fail`: every inference request answered, by outcome, with its whole duration
  (arrival to answer, as the request log and `predictor_request_duration_seconds` have it);
- `queue`: the time a request waited before its forward started (the batcher's queue and
  delay, or the inference thread's queue; 0 for a forward run at once on the event loop);
- `compute_input` / `compute_infer` / `compute_output`: per model execution, numpy to
  tensors (and to the device), the module call (with the device synchronised), tensors back
  to numpy; also per batch size in `batch_stats`;
- `inference_count`: rows answered (a request with a batch of 8 counts 8), `execution_count`:
  forward calls (a batch of requests counts 1); `last_inference`: ms since the epoch.

Executions are recorded from inference threads, requests from the event loop: one lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def as_json(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStatistics:
    def __init__(self, name: str) -> None:
        self.name = name
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchStat] = {}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self._lock = threading.Lock()

    def executed(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One successful forward call on `batch_size` rows."""
        with self._lock:
            self.execution_count += 1
            batch = self.batches.get(batch_size)
            if batch is None:
                batch = self.batches[batch_size] = BatchStat()
            for total, per_batch, ns in (
                (self.compute_input, batch.compute_input, input_ns),
                (self.compute_infer, batch.compute_infer, infer_ns),
                (self.compute_output, batch.compute_output, output_ns),
            ):
                total.add(ns)
                per_batch.add(ns)

    def waited(self, ns: int) -> None:
        """A request's wait before its forward started."""
        with self._lock:
            self.queue.add(ns)

    def inferred(self, rows: int) -> None:
        """A request's forward succeeded with `rows` rows."""
        with self._lock:
            self.inference_count += rows
            self.last_inference_ms = time.time_ns() // 1_000_000

    def answered(self, ok: bool, ns: int) -> None:
        with self._lock:
            (self.success if ok else self.fail).add(ns)

    def as_json(self) -> dict:
        with self._lock:
            return {
                "name": self.name,
                "version": "",
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.as_json(),
                    "fail": self.fail.as_json(),
                    "queue": self.queue.as_json(),
                    "compute_input": self.compute_input.as_json(),
                    "compute_infer": self.compute_infer.as_json(),
                    "compute_output": self.compute_output.as_json(),
                    "cache_hit": Duration().as_json(),  # no response cache here
                    "cache_miss": Duration().as_json(),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": stat.compute_input.as_json(),
                        "compute_infer": stat.compute_infer.as_json(),
                        "compute_output": stat.compute_output.as_json(),
                    }
                    for size, stat in sorted(self.batches.items())
                ],
            }


# Model name -> its statistics; a model registers itself once loaded and warmed up.
MODELS: dict[str, ModelStatistics] = {}


def register(name: str) -> ModelStatistics:
    """Fresh statistics for a model that starts serving."""
    statistics = MODELS[name] = ModelStatistics(name)
    return statistics


def answered(model: str, ok: bool, seconds: float) -> None:
    """An inference request for `model` was answered (unknown models are not counted)."""
    statistics = MODELS.get(model)
    if statistics is not None:
        statistics.answered(ok, int(seconds * 1e9))
