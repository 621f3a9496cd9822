"""The runtime contract: where a sync predict runs is decided once, at load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from inferline.runtimes import base
from inferline.runtimes.base import Model, sample_inputs
from inferline.runtimes.loader import load_model
from inferline.settings import ModelSettings, TensorSpec

CODE = """\
import threading
import time


class Model:
    def predict(self, inputs):
        time.sleep(SLEEP)
        return {"y": inputs["x"] * 2, "thread": threading.get_ident()}
"""


async def loaded(tmp_path: Path, executor_mode: str, sleep: float):
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(CODE.replace("SLEEP", repr(sleep)))
    settings = ModelSettings(
        name="m",
        runtime="python",
        executor=executor_mode,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
    )
    pool = ThreadPoolExecutor(2)
    return await load_model(settings, "1", version_dir, pool), pool


@pytest.mark.parametrize(
    ("mode", "sleep", "inline"),
    [
        ("inline", 0.002, True),
        ("thread", 0.0, False),
        ("auto", 0.0, True),  # microseconds: not worth a thread hop
        ("auto", 0.002, False),  # milliseconds: must not block the event loop
    ],
)
async def test_predict_runs_where_the_load_decided(
    tmp_path: Path, mode: str, sleep: float, inline: bool
) -> None:
    model, pool = await loaded(tmp_path, mode, sleep)
    try:
        x = np.ones((3, 2), dtype=np.float32)
        outputs = await model.infer({"x": x})
        np.testing.assert_array_equal(outputs["y"], x * 2)
        assert (outputs["thread"] == threading.get_ident()) is inline
    finally:
        pool.shutdown()


def test_sample_inputs_follow_the_signature() -> None:
    sample = sample_inputs(
        [
            TensorSpec(name="a", datatype="FP16", shape=[-1, 4]),
            TensorSpec(name="b", datatype="BYTES", shape=[-1]),
            TensorSpec(name="c", datatype="INT8", shape=[2, -1, 3]),
        ]
    )
    assert sample["a"].shape == (1, 4) and sample["a"].dtype == np.float16
    assert sample["b"].tolist() == [b""]
    assert sample["c"].shape == (2, 1, 3) and sample["c"].dtype == np.int8


class Counting(Model):
    """Counts its predict calls and notes the thread of the last one."""

    def __init__(self, settings: ModelSettings, sleep: float = 0.0) -> None:
        super().__init__(settings, "1", Path("unused"))
        self.sleep, self.calls, self.thread = sleep, 0, 0

    def load(self) -> None:
        return None

    def predict(self, inputs):
        self.calls += 1
        self.thread = threading.get_ident()
        time.sleep(self.sleep)
        return {"y": inputs["x"] * 2}


def counting_settings(**fields) -> ModelSettings:
    return ModelSettings(
        name="m",
        runtime="python",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
        warmup_requests=0,
        **fields,
    )


async def test_auto_probe_calls_a_slow_model_once_within_its_budget() -> None:
    # Each call sleeps four times the budget: the probe must stop after the first.
    model = Counting(counting_settings(executor="auto", probe_budget_ms=5), sleep=0.02)
    with ThreadPoolExecutor(2) as pool:
        await model.bind(pool)
        assert model.calls == 1
        await model.infer({"x": np.ones((1, 2), dtype=np.float32)})
        assert model.thread != threading.get_ident()  # too slow for the loop


async def test_auto_inline_model_sends_big_requests_to_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The probe's verdict must not depend on how loaded the host is: any model is "tiny".
    monkeypatch.setattr(base, "INLINE_BELOW_SECONDS", 60.0)
    model = Counting(
        counting_settings(executor="auto", inline_max_rows=4, probe_budget_ms=60_000.0)
    )
    with ThreadPoolExecutor(2) as pool:
        await model.bind(pool)
        small = await model.infer({"x": np.ones((4, 2), dtype=np.float32)})
        assert model.thread == threading.get_ident()  # tiny: on the loop
        big = np.arange(10, dtype=np.float32).reshape(5, 2)
        answer = await model.infer({"x": big})
        assert model.thread != threading.get_ident()  # 5 rows > 4: in the pool
        np.testing.assert_array_equal(answer["y"], big * 2)
        np.testing.assert_array_equal(small["y"], np.full((4, 2), 2, dtype=np.float32))
