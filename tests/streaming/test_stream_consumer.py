"""The consumer loop with a broker and scorer in memory: bounded in-flight work, drain on
stop, a failing batch does not stop the loop, passing failures are retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from inferline.errors import InferlineError, Unavailable
from inferline.settings import StreamSettings, TensorSpec
from inferline.streaming import Consumer, DeadLetter, Delivery, Parsed, Result, Scored

SPECS = [TensorSpec(name="x", datatype="FP64", shape=[-1, 2])]


class MemoryBroker:
    def __init__(self, messages: int) -> None:
        self.queue = [
            Delivery(str(i), {"id": str(i), "x": f"[{i}, 1]"}, 1, str(i)) for i in range(messages)
        ]
        self.fetches = 0
        self.results: list[Result] = []
        self.dead: list[DeadLetter] = []
        self.retried: list[Delivery] = []

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        self.fetches += 1
        batch, self.queue = self.queue[:1], self.queue[1:]  # one message per read
        if not batch:
            await asyncio.sleep(block_ms / 1000)
        return batch

    async def settle(
        self, results: list[Result], dead: list[DeadLetter], retry: list[Delivery]
    ) -> None:
        self.results += results
        self.dead += dead
        for delivery in retry:  # delivered again, as a broker does
            delivery.attempts += 1
            self.queue.append(delivery)
        self.retried += retry

    async def backlog(self) -> tuple[int | None, int | None]:
        return None, None


class GatedScorer:
    """Scores once ``gate`` opens; counts how many batches wait at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0
        self.fail_ids: dict[str, BaseException] = {}

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def signature(self) -> Sequence[TensorSpec] | None:
        return SPECS

    async def score(self, items: Sequence[Parsed]) -> list[Scored | InferlineError]:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await self.gate.wait()
        self.waiting -= 1
        for item in items:
            error = self.fail_ids.pop(item.id, None)
            if error is not None:
                raise error
        return [Scored({"y": item.inputs["x"].sum(axis=1)}, "1") for item in items]


def consumer(broker: MemoryBroker, scorer: GatedScorer, **config: object) -> Consumer:
    settings = StreamSettings(batch_size=1, linger_ms=0, block_ms=5, **config)
    return Consumer(broker, scorer, "m", settings, max_elements=100)


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_reading_pauses_while_max_inflight_batches_are_open() -> None:
    broker, scorer = MemoryBroker(10), GatedScorer()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(broker, scorer, max_inflight_batches=3).run(stop))
    await _until(lambda: scorer.waiting == 3)
    await asyncio.sleep(0.05)  # a loop that did not wait would have read more by now
    assert broker.fetches == 3 and len(broker.queue) == 7
    scorer.gate.set()
    await _until(lambda: len(broker.results) == 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert scorer.most_waiting == 3


async def test_stop_drains_what_is_in_flight() -> None:
    broker, scorer = MemoryBroker(2), GatedScorer()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(broker, scorer, max_inflight_batches=2).run(stop))
    await _until(lambda: scorer.waiting == 2)
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done()  # waits for the open batches
    scorer.gate.set()
    await asyncio.wait_for(task, 10)
    assert sorted(r.id for r in broker.results) == ["0", "1"]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), Unavailable("busy")])
async def test_a_failing_batch_neither_stops_the_loop_nor_loses_its_message(
    error: BaseException,
) -> None:
    broker, scorer = MemoryBroker(5), GatedScorer()
    scorer.fail_ids["2"] = error
    scorer.gate.set()
    stop = asyncio.Event()
    run = consumer(broker, scorer)
    task = asyncio.create_task(run.run(stop))
    if isinstance(error, InferlineError):  # retried by the broker, then scored
        await _until(lambda: len(broker.results) == 5)
        assert [d.broker_id for d in broker.retried] == ["2"]
    else:  # a bug: the batch stays unsettled (the broker redelivers it), the loop goes on
        await _until(lambda: len(broker.results) == 4)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not broker.dead


async def test_a_message_past_max_deliveries_is_dead_lettered_unscored() -> None:
    broker, scorer = MemoryBroker(1), GatedScorer()
    broker.queue[0].attempts = 4
    scorer.gate.set()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(broker, scorer, max_deliveries=3).run(stop))
    await _until(lambda: len(broker.dead) == 1)
    stop.set()
    await asyncio.wait_for(task, 10)
    (letter,) = broker.dead
    assert letter.fields["attempts"] == "4" and letter.reason == "deliveries"
    assert not broker.results
