"""Adaptive batching: concurrent requests stacked into one forward call.

Requests whose inputs agree in dtype and in every dimension but the first are
concatenated along dimension 0, up to `max_batch_size` rows, waiting at most
`max_delay` for company after the first one arrives. Outputs are split back by rows.
If the batched call fails, each request of the batch runs alone, so one bad request
fails alone. A request that cannot be stacked (0-d inputs, or more rows than the
limit) runs alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("predictor.batching")

Forward = Callable[[list[np.ndarray]], dict[str, np.ndarray]]


@dataclass(slots=True)
class ForwardTiming:
    """When one request's forward ran (perf_counter ns), whoever ran it: the request waited
    from `queued_ns` to `started_ns` (statistics' queue, a trace's queue span), and the
    forward, alone or in a batch of `batch_rows` rows, took until `finished_ns`."""

    queued_ns: int
    started_ns: int = 0
    finished_ns: int = 0
    batch_rows: int = 0


@dataclass
class _Pending:
    arrays: list[np.ndarray]
    future: asyncio.Future = field(repr=False)
    timing: ForwardTiming = field(default_factory=lambda: ForwardTiming(time.perf_counter_ns()))

    @property
    def rows(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def key(self) -> tuple:
        """Requests with equal keys can be concatenated along dimension 0."""
        return tuple((a.dtype.str, a.shape[1:]) for a in self.arrays)

    @property
    def stackable(self) -> bool:
        return all(a.ndim >= 1 for a in self.arrays) and len({a.shape[0] for a in self.arrays}) == 1


class Batcher:
    def __init__(
        self,
        forward: Forward,
        max_batch_size: int,
        max_delay: float,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.on_batch = on_batch  # rows of each batch, ns since its first request came
        # One thread: batches run one after another, each using all the cores torch has.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(
        self, arrays: list[np.ndarray], timing: ForwardTiming | None = None
    ) -> dict[str, np.ndarray]:
        """The request's outputs; `timing` (if given) says when its forward ran."""
        loop = asyncio.get_running_loop()
        pending = _Pending(arrays, loop.create_future())
        if timing is not None:
            pending.timing = timing
        if not pending.stackable or pending.rows >= self.max_batch_size:
            return await loop.run_in_executor(self._executor, self._call, arrays, [pending])
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        assert self._queue is not None
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        held: list[_Pending] = []
        while True:
            first = held.pop(0) if held else await queue.get()
            batch, rows = [first], first.rows
            deadline = asyncio.get_running_loop().time() + self.max_delay
            # Requests of another shape wait for the next batch, in arrival order.
            for other in list(held):
                if other.key == first.key and rows + other.rows <= self.max_batch_size:
                    held.remove(other)
                    batch.append(other)
                    rows += other.rows
            while rows < self.max_batch_size:
                item = await self._next(queue, deadline)
                if item is None:
                    break
                if item.key == first.key and rows + item.rows <= self.max_batch_size:
                    batch.append(item)
                    rows += item.rows
                else:
                    held.append(item)
            await self._execute(batch)

    @staticmethod
    async def _next(queue: asyncio.Queue[_Pending], deadline: float) -> _Pending | None:
        """The next request: one already queued at once (every await hands the event loop
        to other requests, so waiting for each in turn would close the batch with most
        of the queue left behind), else the next to arrive before `deadline`, else None."""
        try:
            return queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return None

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        live = [p for p in batch if not p.future.done()]  # skip callers that went away
        if not live:
            return
        if self.on_batch is not None:
            delay = time.perf_counter_ns() - min(p.timing.queued_ns for p in live)
            self.on_batch(sum(p.rows for p in live), delay)
        if len(live) == 1:
            await self._settle(
                live[0], loop.run_in_executor(self._executor, self._call, live[0].arrays, live)
            )
            return
        stacked = [np.concatenate(parts) for parts in zip(*(p.arrays for p in live), strict=False)]
        try:
            outputs = await loop.run_in_executor(self._executor, self._call, stacked, live)
            total = stacked[0].shape[0]
            if any(o.ndim == 0 or o.shape[0] != total for o in outputs.values()):
                raise _NotRowWise
        except Exception:
            # Run them one by one: only the request at fault gets the error.
            for pending in live:
                await self._settle(
                    pending,
                    loop.run_in_executor(self._executor, self._call, pending.arrays, [pending]),
                )
            return
        start = 0
        for pending in live:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({name: o[start:end] for name, o in outputs.items()})
            start = end

    def _call(self, arrays: list[np.ndarray], pendings: list[_Pending]) -> dict[str, np.ndarray]:
        """The forward, on the batch thread, timed for each request it serves (a batch
        retried one by one: the retry is what served it)."""
        started = time.perf_counter_ns()
        outputs = self.forward(arrays)
        finished = time.perf_counter_ns()
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        for pending in pendings:
            timing = pending.timing
            timing.started_ns, timing.finished_ns, timing.batch_rows = started, finished, rows
        return outputs

    @staticmethod
    async def _settle(pending: _Pending, work: asyncio.Future) -> None:
        try:
            result = await work
        except Exception as error:
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        if not pending.future.done():
            pending.future.set_result(result)


class _NotRowWise(Exception):
    """The model's outputs do not have one row per input row, so they cannot be split."""
