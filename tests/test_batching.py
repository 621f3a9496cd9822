"""Dynamic batching: every caller gets exactly its own rows, whatever it was batched with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from inferline.batching import Batcher
from inferline.errors import InternalError, InvalidInput, ModelNotReady, QueueFull
from inferline.runtimes.base import Inputs, Outputs
from inferline.settings import BatchingSettings

HANG_GUARD = 30.0  # seconds; only stops a broken batcher from hanging the suite


def reference(inputs: Inputs) -> dict[str, np.ndarray]:
    """What the fake model computes, row by row, so batched answers are checkable."""
    x = inputs["x"]
    n = x.shape[0]
    row_sum = x.reshape(n, -1).sum(axis=1)
    z = row_sum + (inputs["w"].reshape(n, -1).sum(axis=1) if "w" in inputs else 0)
    return {"y": x * 2 + row_sum.reshape((n,) + (1,) * (x.ndim - 1)), "z": z}


def assert_same(got: Outputs, want: Outputs) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name])


class FakeModel:
    """Async predict that records each batch; optionally held until ``gate`` opens."""

    def __init__(self, *, gated: bool = False, sleep: float = 0.0) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.sleep = sleep

    async def __call__(self, inputs: Inputs) -> Outputs:
        self.batches.append(dict(inputs))
        self.entered.set()
        await self.gate.wait()
        await asyncio.sleep(self.sleep)
        return reference(inputs)

    @property
    def rows(self) -> list[int]:
        return [len(batch["x"]) for batch in self.batches]


Make = Callable[..., Awaitable[Batcher]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[Batcher] = []
    models: list[FakeModel] = []

    async def factory(predict: Callable[[Inputs], Awaitable[Outputs]], **settings: Any) -> Batcher:
        batcher = Batcher(predict, BatchingSettings(**settings), name="m:1")
        await batcher.start()
        made.append(batcher)
        if isinstance(predict, FakeModel):
            models.append(predict)
        return batcher

    yield factory
    for model in models:  # a failed test must not leave stop() waiting on a held batch
        model.gate.set()
    for batcher in made:
        await asyncio.wait_for(batcher.stop(), HANG_GUARD)


def rows(n: int, start: float = 0.0, width: int = 3) -> dict[str, np.ndarray]:
    x = np.arange(n * width, dtype=np.float64).reshape(n, width) + start
    return {"x": x}


async def test_queued_requests_merge_up_to_max_batch_size(make: Make) -> None:
    model = FakeModel()
    batcher = await make(model, max_batch_size=4, max_queue_delay_ms=0)
    requests = [rows(1, start=10 * i) for i in range(12)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert model.rows == [4, 4, 4]
    for request, result in zip(requests, results, strict=True):
        assert_same(result, reference(request))
    assert batcher.last_batch_rows == 4
    assert batcher.queue_depth == 0


async def test_first_request_waits_for_company_until_batch_is_full(make: Make) -> None:
    model = FakeModel()
    # A delay far longer than the test: the batch runs only because it fills up.
    batcher = await make(model, max_batch_size=3, max_queue_delay_ms=600_000)
    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(batcher.submit(rows(1, start=i))))
        for _ in range(5):
            await asyncio.sleep(0)
        if i < 2:
            assert model.batches == []  # still waiting for company
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD)
    assert model.rows == [3]
    for i, result in enumerate(results):
        assert_same(result, reference(rows(1, start=i)))


async def test_partial_batch_runs_after_the_delay(make: Make) -> None:
    model = FakeModel()
    batcher = await make(model, max_batch_size=8, max_queue_delay_ms=5)
    results = await asyncio.wait_for(
        asyncio.gather(batcher.submit(rows(2)), batcher.submit(rows(3, start=1))), HANG_GUARD
    )
    assert model.rows == [5]
    assert_same(results[0], reference(rows(2)))
    assert_same(results[1], reference(rows(3, start=1)))


async def test_oversized_request_is_split_and_stitched_back(make: Make) -> None:
    model = FakeModel()
    batcher = await make(model, max_batch_size=4, max_queue_delay_ms=0)
    request = rows(10)
    result = await asyncio.wait_for(batcher.submit(request), HANG_GUARD)
    assert sorted(model.rows) == [2, 4, 4]
    assert_same(result, reference(request))


async def test_many_concurrent_clients_with_mixed_shapes_each_get_their_own_rows(
    make: Make,
) -> None:
    rng = np.random.default_rng(20240607)
    model = FakeModel(sleep=0.001)
    max_rows = 8
    batcher = await make(
        model, max_batch_size=max_rows, max_queue_delay_ms=2, max_queue_size=10_000
    )
    trailing = [(3,), (2, 2)]
    dtypes = [np.float32, np.int64]
    requests = []
    for i in range(200):
        n = int(rng.integers(1, max_rows + 1)) if i % 10 else int(rng.integers(max_rows + 1, 30))
        shape = (n, *trailing[int(rng.integers(2))])
        dtype = dtypes[int(rng.integers(2))]
        request = {"x": rng.integers(-50, 50, size=shape).astype(dtype)}
        if rng.random() < 0.3:  # a different set of input names: a batch of its own kind
            request["w"] = rng.integers(0, 5, size=(n, 2)).astype(np.int64)
        requests.append(request)
    pauses = rng.integers(0, 4, size=len(requests))

    async def client(request: Inputs, pause: int) -> Outputs:
        for _ in range(pause):  # interleave arrivals without depending on the clock
            await asyncio.sleep(0)
        return await batcher.submit(request)

    results = await asyncio.wait_for(
        asyncio.gather(*(client(r, int(p)) for r, p in zip(requests, pauses, strict=True))),
        HANG_GUARD,
    )
    for request, result in zip(requests, results, strict=True):
        assert_same(result, reference(request))
    assert max(model.rows) <= max_rows
    chunks = sum(-(-len(r["x"]) // max_rows) for r in requests)
    assert len(model.batches) < chunks  # requests really were merged
    for batch in model.batches:  # each batch held one kind of request only
        assert all(len(v) == len(batch["x"]) for v in batch.values())
    assert batcher.queue_depth == 0


async def test_sklearn_model_batched_equals_unbatched(make: Make) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    linear_model = pytest.importorskip("sklearn.linear_model")
    features, labels = datasets.make_classification(n_samples=300, n_features=5, random_state=0)
    clf = linear_model.LogisticRegression().fit(features, labels)
    pool = ThreadPoolExecutor(2)

    def predict_sync(inputs: Inputs) -> Outputs:
        return {"label": clf.predict(inputs["x"]), "proba": clf.predict_proba(inputs["x"])}

    async def predict(inputs: Inputs) -> Outputs:
        return await asyncio.get_running_loop().run_in_executor(pool, predict_sync, inputs)

    try:
        batcher = await make(predict, max_batch_size=16, max_queue_delay_ms=1)
        rng = np.random.default_rng(3)
        requests = [{"x": rng.normal(size=(int(rng.integers(1, 40)), 5))} for _ in range(60)]
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(r) for r in requests)), HANG_GUARD
        )
    finally:
        pool.shutdown(wait=True)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["label"], clf.predict(request["x"]))
        np.testing.assert_allclose(result["proba"], clf.predict_proba(request["x"]), rtol=1e-12)


async def test_full_queue_refuses_at_once_while_earlier_requests_succeed(make: Make) -> None:
    model = FakeModel(gated=True)
    batcher = await make(
        model, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2, max_concurrent_batches=1
    )
    running = asyncio.create_task(batcher.submit(rows(1, start=0)))
    await asyncio.wait_for(model.entered.wait(), HANG_GUARD)
    queued = [asyncio.create_task(batcher.submit(rows(1, start=i))) for i in (1, 2)]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 2
    refused = batcher.submit(rows(1, start=3))
    with pytest.raises(QueueFull, match=r"'m:1' has 2 requests queued"):
        refused.send(None)  # raises on its first step: no waiting at all
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(running, *queued), HANG_GUARD)
    for i, result in enumerate(results):
        assert_same(result, reference(rows(1, start=i)))


async def test_model_exception_fails_only_its_batch(make: Make) -> None:
    model = FakeModel()

    async def predict(inputs: Inputs) -> Outputs:
        if (inputs["x"] < 0).any():
            raise ValueError("poisoned row")
        return await model(inputs)

    batcher = await make(predict, max_batch_size=2, max_queue_delay_ms=0)
    requests = [rows(1, start=-100), rows(1, start=1), rows(1, start=2), rows(1, start=3)]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True), HANG_GUARD
    )
    assert isinstance(results[0], ValueError)
    assert isinstance(results[1], ValueError)  # shared the poisoned batch
    for request, result in zip(requests[2:], results[2:], strict=True):
        assert not isinstance(result, BaseException)
        assert_same(result, reference(request))
    later = await asyncio.wait_for(batcher.submit(rows(2, start=7)), HANG_GUARD)
    assert_same(later, reference(rows(2, start=7)))


async def test_wrong_row_count_fails_that_batch_with_internal_error(make: Make) -> None:
    calls = []

    async def predict(inputs: Inputs) -> Outputs:
        calls.append(len(inputs["x"]))
        outputs = reference(inputs)
        if len(calls) == 1:
            return {"y": outputs["y"][:-1], "z": outputs["z"]}
        if len(calls) == 2:
            return {"y": outputs["y"], "z": np.array(1.0)}  # 0-d: no rows
        return outputs

    batcher = await make(predict, max_batch_size=4, max_queue_delay_ms=0)
    results = await asyncio.wait_for(
        asyncio.gather(
            batcher.submit(rows(1)), batcher.submit(rows(1, start=5)), return_exceptions=True
        ),
        HANG_GUARD,
    )
    for result in results:
        assert isinstance(result, InternalError)
        assert "returned 1 rows in output 'y' for 2 input rows" in result.message
    with pytest.raises(InternalError, match="returned no rows in output 'z' for 3 input rows"):
        await asyncio.wait_for(batcher.submit(rows(3)), HANG_GUARD)
    assert_same(await asyncio.wait_for(batcher.submit(rows(2)), HANG_GUARD), reference(rows(2)))


async def test_request_cancelled_while_queued_is_dropped(make: Make) -> None:
    model = FakeModel(gated=True)
    batcher = await make(model, max_batch_size=4, max_queue_delay_ms=0, max_concurrent_batches=1)
    running = asyncio.create_task(batcher.submit(rows(1, start=0)))
    await asyncio.wait_for(model.entered.wait(), HANG_GUARD)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(rows(2, start=1000)), 0.01)
    assert batcher.queue_depth == 0
    later = asyncio.create_task(batcher.submit(rows(1, start=5)))
    await asyncio.sleep(0)
    model.gate.set()
    first, second = await asyncio.wait_for(asyncio.gather(running, later), HANG_GUARD)
    assert_same(first, reference(rows(1, start=0)))
    assert_same(second, reference(rows(1, start=5)))
    assert model.rows == [1, 1]
    assert not any((batch["x"] >= 1000).any() for batch in model.batches)


async def test_request_cancelled_while_running_does_not_break_its_batch(make: Make) -> None:
    model = FakeModel(gated=True)
    # The two requests fill the batch exactly, so they run together whatever the order.
    batcher = await make(model, max_batch_size=3, max_queue_delay_ms=600_000)
    kept = asyncio.create_task(batcher.submit(rows(1, start=0)))
    dropped = asyncio.create_task(asyncio.wait_for(batcher.submit(rows(2, start=9)), 0.01))
    with pytest.raises(TimeoutError):
        await dropped
    assert model.rows == [3]  # it was already running with `kept`
    model.gate.set()
    assert_same(await asyncio.wait_for(kept, HANG_GUARD), reference(rows(1, start=0)))
    after = await asyncio.wait_for(batcher.submit(rows(3, start=4)), HANG_GUARD)
    assert_same(after, reference(rows(3, start=4)))


async def test_stop_fails_queued_lets_running_finish_and_refuses_new(make: Make) -> None:
    model = FakeModel(gated=True)
    batcher = await make(model, max_batch_size=1, max_queue_delay_ms=0, max_concurrent_batches=1)
    running = asyncio.create_task(batcher.submit(rows(1)))
    await asyncio.wait_for(model.entered.wait(), HANG_GUARD)
    queued = [asyncio.create_task(batcher.submit(rows(1, start=i))) for i in (1, 2)]
    await asyncio.sleep(0)
    stopping = asyncio.create_task(batcher.stop())
    failed = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), HANG_GUARD)
    assert all(isinstance(f, ModelNotReady) for f in failed)
    with pytest.raises(ModelNotReady):
        await batcher.submit(rows(1))
    assert not stopping.done()  # still waiting for the running batch
    model.gate.set()
    await asyncio.wait_for(stopping, HANG_GUARD)
    assert_same(running.result(), reference(rows(1)))
    assert model.rows == [1]


async def test_submit_before_start_is_refused() -> None:
    batcher = Batcher(FakeModel(), BatchingSettings(max_batch_size=2), name="m:1")
    with pytest.raises(ModelNotReady):
        await batcher.submit(rows(1))
    await batcher.stop()


async def test_mismatched_batch_dimensions_are_refused_before_queueing(make: Make) -> None:
    batcher = await make(FakeModel(), max_batch_size=4)
    with pytest.raises(InvalidInput):
        await batcher.submit({"x": np.zeros((2, 3)), "w": np.zeros((3, 2))})
    assert batcher.queue_depth == 0


async def test_crashed_loop_fails_pending_requests_instead_of_hanging(
    make: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    batcher = await make(FakeModel(), max_batch_size=4, max_queue_delay_ms=0)

    async def broken_collect() -> list[Any]:
        raise RuntimeError("bug in the loop")

    monkeypatch.setattr(batcher, "_collect", broken_collect)
    with caplog.at_level(logging.ERROR, logger="inferline.batching"):
        with pytest.raises(InternalError, match="batching for model 'm:1' failed"):
            await asyncio.wait_for(batcher.submit(rows(1)), HANG_GUARD)
        assert "crashed" in caplog.text
    with pytest.raises(InternalError):
        await batcher.submit(rows(1))
