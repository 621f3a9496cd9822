"""Telemetry's observers are given to the data plane when it is built: every model reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inferline.dataplane import DataPlane
from inferline.monitoring.records import InferenceRecord
from inferline.monitoring.telemetry import Observers, Telemetry
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import BatchingSettings, CacheSettings, ModelSettings, Settings, TensorSpec
from inferline.types import InferRequest, Tensor


class Doubler(Model):
    def __init__(self, name: str, settings: dict[str, object]) -> None:
        model_settings = ModelSettings(
            name=name,
            runtime="python",
            inputs=[TensorSpec(name="x", datatype="FP64", shape=[-1, 1])],
            outputs=[TensorSpec(name="y", datatype="FP64", shape=[-1])],
            warmup_requests=0,
            **settings,  # type: ignore[arg-type]
        )
        super().__init__(model_settings, "1", Path("."))

    async def load(self) -> None:
        return None

    async def predict(self, inputs: Inputs) -> Outputs:
        return {"y": inputs["x"][:, 0] * 2}


def row(value: float) -> InferRequest:
    return InferRequest(inputs=[Tensor("x", "FP64", [1, 1], np.array([[value]]))])


def sample(telemetry: Telemetry, name: str, **labels: str) -> float:
    assert telemetry.metrics is not None
    telemetry.metrics.flush()
    return telemetry.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_models_added_before_telemetry_starts_report_requests_batches_and_evictions() -> None:
    settings = Settings(request_log="off", metrics_refresh_seconds=60)
    telemetry = Telemetry(settings)
    plane = DataPlane(settings, observers=telemetry.observers())
    await plane.start(scan=False)
    # One batched model, one unbatched with a cache that holds a single answer.
    await add(plane, Doubler("batched", {"batching": BatchingSettings(max_batch_size=4)}))
    await add(plane, Doubler("cached", {"cache": CacheSettings(enabled=True, max_bytes=8)}))
    await telemetry.start(plane)  # where attach() used to wire the hooks, too late for these
    try:
        for value in (1.0, 2.0, 3.0):
            for name in ("batched", "cached"):
                response = await plane.infer(name, None, row(value), protocol="rest")
                np.testing.assert_array_equal(response.outputs[0].data, [value * 2])
    finally:
        await telemetry.stop()
        await plane.stop()
    for name in ("batched", "cached"):
        labels = {"model": name, "version": "1"}
        assert sample(
            telemetry, "inferline_requests_total", **labels, protocol="rest", status="200"
        )
        assert sample(telemetry, "inferline_batch_size_count", **labels) == 3
        assert sample(telemetry, "inferline_compute_seconds_count", **labels) == 3
    # three different answers through a one-answer cache: two evictions
    assert sample(telemetry, "inferline_cache_evictions_total", model="cached", version="1") == 2


class Seen:
    def __init__(self) -> None:
        self.records: list[InferenceRecord] = []

    def observe(self, record: InferenceRecord) -> None:
        self.records.append(record)


async def test_the_plane_reports_to_the_observers_it_was_built_with_in_order() -> None:
    first, second = Seen(), Seen()
    plane = DataPlane(Settings(), observers=Observers((first, second)))
    await plane.start(scan=False)
    await add(plane, Doubler("m", {}))
    try:
        await plane.infer("m", None, row(1.0), protocol="grpc", request_id="r1")
    finally:
        await plane.stop()
    assert plane.observers == (first, second)
    assert [r.request_id for r in first.records] == [r.request_id for r in second.records] == ["r1"]


def test_telemetry_builds_the_observers_from_settings() -> None:
    extra = Seen()
    telemetry = Telemetry(Settings(request_log="info"))
    observers = telemetry.observers(extra)
    assert observers.requests == (telemetry.metrics, telemetry.request_log, extra)
    assert telemetry.metrics is not None
    assert observers.batches == telemetry.metrics.observe_batch
    assert observers.cache_evictions == telemetry.metrics.cache_evicted
    quiet = Telemetry(Settings(request_log="off", metrics=False)).observers()
    assert quiet == Observers()


async def add(plane: DataPlane, model: Model) -> None:
    await model.bind(plane.executor)
    await plane.add(model)
