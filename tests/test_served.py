"""A served model's share of the shared thread pool: one slow model cannot starve the rest."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from inferline.dataplane import DataPlane
from inferline.errors import DeadlineExceeded
from inferline.runtimes.base import Model
from inferline.settings import ModelSettings, Settings, TensorSpec
from inferline.types import InferRequest, Tensor


class Gated(Model):
    """A sync model whose calls block until ``gate`` opens; counts what ran."""

    def __init__(self, name: str, **fields: object) -> None:
        settings = ModelSettings(
            name=name,
            runtime="python",
            executor="thread",
            warmup_requests=0,
            inputs=[TensorSpec(name="x", datatype="FP64", shape=[-1, 1])],
            **fields,
        )
        super().__init__(settings, "1", Path("unused"))
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.running = self.calls = 0

    def load(self) -> None:
        return None

    def predict(self, inputs):
        with self.lock:
            self.running += 1
            self.calls += 1
        self.entered.set()
        try:
            self.gate.wait(60)
            return {"y": inputs["x"][:, 0] + 1}
        finally:
            with self.lock:
                self.running -= 1


def request(value: float) -> InferRequest:
    return InferRequest([Tensor("x", "FP64", [1, 1], np.array([[value]]))])


async def test_timed_out_calls_of_a_slow_model_leave_threads_to_the_others() -> None:
    plane = DataPlane(Settings(executor_threads=2))
    await plane.start(scan=False)
    slow, fast = Gated("slow", timeout_ms=20), Gated("fast")
    fast.gate.set()
    try:
        for model in (slow, fast):
            await model.bind(plane.executor)
            await plane.add(model)
        calls = [plane.infer("slow", None, request(i)) for i in range(6)]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            assert isinstance(outcome, DeadlineExceeded)
        await asyncio.to_thread(slow.entered.wait, 60)
        # The clients are gone, but the slow model still holds its share: one thread.
        assert slow.running == 1
        # The fast model gets the other thread while the slow one is still stuck.
        answer = await asyncio.wait_for(plane.infer("fast", None, request(41.0)), 60)
        assert answer.outputs[0].data.tolist() == [42.0]
        assert slow.running == 1
    finally:
        slow.gate.set()
        await plane.stop()
    # Calls that timed out while waiting for a slot never ran.
    assert slow.calls == 1


@pytest.mark.parametrize("max_threads", [1, 3])
async def test_max_threads_sets_a_models_share(max_threads: int) -> None:
    plane = DataPlane(Settings(executor_threads=4))
    await plane.start(scan=False)
    slow = Gated("slow", timeout_ms=20, max_threads=max_threads)
    try:
        await slow.bind(plane.executor)
        await plane.add(slow)
        calls = [plane.infer("slow", None, request(i)) for i in range(8)]
        await asyncio.gather(*calls, return_exceptions=True)
        while slow.calls < max_threads:  # the admitted calls may still be starting
            await asyncio.sleep(0.001)
        assert slow.running == max_threads
    finally:
        slow.gate.set()
        await plane.stop()
    assert slow.calls == max_threads
