"""Adaptive batching on the CPU: concurrent requests share one forward call, results go
back to the right caller, and one bad request fails alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kserve.errors import InvalidInput

from predictor.model import ModelOptions, TorchModel
from tests import toy_models
from tests.toy_models import BatchRecorder


@pytest.fixture
def batched_model(tmp_path) -> TorchModel:
    toy_models.save_state_dict(tmp_path, BatchRecorder(), None)
    model = TorchModel(
        "batched",
        ModelOptions(
            model_dir=str(tmp_path),
            model_class="tests.toy_models:BatchRecorder",
            max_batch_size=8,
            max_batch_delay_ms=200,
        ),
    )
    model.load()
    BatchRecorder.batch_sizes.clear()
    return model


def run_concurrently(model: TorchModel, arrays: list[np.ndarray]) -> list:
    async def all_at_once():
        calls = [model.infer({"input-0": array}) for array in arrays]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(all_at_once())


def test_concurrent_requests_share_one_forward_call(batched_model):
    arrays = [np.full((1, 3), i, np.float32) for i in range(8)]
    results = run_concurrently(batched_model, arrays)
    assert BatchRecorder.batch_sizes == [8]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["output-0"], np.full((1, 3), 2 * i, np.float32))


def test_batch_is_capped_at_max_batch_size(batched_model):
    arrays = [np.full((3, 2), i, np.float32) for i in range(4)]  # 12 rows, limit 8
    results = run_concurrently(batched_model, arrays)
    assert sorted(BatchRecorder.batch_sizes) == [6, 6]
    for i, result in enumerate(results):
        assert result["output-0"].shape == (3, 2) and float(result["output-0"][0, 0]) == 2 * i


def test_one_bad_request_fails_alone(batched_model):
    arrays = [np.ones((1, 2), np.float32) * i for i in range(4)]
    arrays[2] = np.array([[np.nan, 1.0]], np.float32)
    results = run_concurrently(batched_model, arrays)
    assert isinstance(results[2], InvalidInput) and "NaN in input" in str(results[2])
    for i in (0, 1, 3):
        np.testing.assert_array_equal(results[i]["output-0"], np.ones((1, 2)) * 2 * i)


def test_different_shapes_are_not_stacked(batched_model):
    arrays = [np.ones((1, 3), np.float32), np.ones((1, 5), np.float32), np.ones((1, 3), np.float32)]
    results = run_concurrently(batched_model, arrays)
    assert sorted(BatchRecorder.batch_sizes) == [1, 2]
    assert [r["output-0"].shape for r in results] == [(1, 3), (1, 5), (1, 3)]


def test_scalars_run_alone(batched_model):
    results = run_concurrently(
        batched_model, [np.array(3.0, np.float32), np.ones((2,), np.float32)]
    )
    assert results[0]["output-0"].shape == () and float(results[0]["output-0"]) == 6.0
    assert results[1]["output-0"].tolist() == [2.0, 2.0]


def test_requests_queued_during_a_forward_go_in_the_next_batch_at_once():
    """What queued up while a batch ran is taken whole, without waiting for each request in
    turn: with no delay allowed at all, the 20 requests that arrive during the first
    forward still make one batch."""
    import time

    from predictor.batching import Batcher

    sizes: list[int] = []

    def forward(arrays):
        sizes.append(arrays[0].shape[0])
        time.sleep(0.2 if len(sizes) == 1 else 0)
        return {"y": arrays[0] * 2}

    batcher = Batcher(forward, max_batch_size=64, max_delay=0.0)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit([np.zeros((1, 2), np.float32)]))
        await asyncio.sleep(0.05)  # the first forward is running
        later = [batcher.submit([np.full((1, 2), i, np.float32)]) for i in range(20)]
        return await first, await asyncio.gather(*later)

    _, results = asyncio.run(scenario())
    assert sizes == [1, 20]
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(20)]


def test_batches_never_exceed_the_exported_batch_bound(tmp_path):
    """A batch of 1..4 rows (torch.export Dim max=4) caps --max_batch_size 64 at 4."""
    import torch

    from predictor.model import ModelOptions, TorchModel
    from tests import toy_models

    batch = torch.export.Dim("batch", min=1, max=4)
    toy_models.save_bounded_export(
        tmp_path, toy_models.seeded_affine(), (torch.zeros(2, 4),), ({0: batch},)
    )
    model = TorchModel("m", ModelOptions(model_dir=str(tmp_path), max_batch_size=64))
    model.load()
    assert model._batcher is not None and model._batcher.max_batch_size == 4


def test_a_request_retried_alone_after_its_batch_failed_is_timed_by_its_retry():
    """When a batch fails and its requests run one by one, each request's timing is its own
    retry's (a queue time, never a negative one)."""
    import asyncio
    import time

    import numpy as np

    from predictor.batching import Batcher, ForwardTiming

    def forward(arrays):
        if arrays[0].shape[0] > 1:
            raise ValueError("no batches here")
        return {"out": arrays[0] * 2}

    async def main():
        batcher = Batcher(forward, 8, 0.05)
        timings = [ForwardTiming(time.perf_counter_ns()) for _ in range(3)]
        arrays = [np.ones((1, 2), np.float32) for _ in range(3)]
        await asyncio.gather(
            *(batcher.submit([a], t) for a, t in zip(arrays, timings, strict=True))
        )
        return timings

    for timing in asyncio.run(main()):
        assert timing.started_ns >= timing.queued_ns > 0
        assert timing.finished_ns >= timing.started_ns
        assert timing.batch_rows == 1
