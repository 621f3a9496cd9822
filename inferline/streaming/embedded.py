"""The embedded pattern: the model runs inside the consumer.

The consumer holds its own :class:`~inferline.dataplane.DataPlane`, built the way
``inferline serve`` builds it: the same validation, the same observers (request
metrics, request log, payload log) and, without ``--model-dir``, the same
:class:`~inferline.lifecycle.RegistrySync`, so a ``promote`` switches the
version a stream scores with, between two batches, without a restart.

A micro-batch is scored in one data plane call, its messages' rows concatenated
along the batch dimension. If that call is refused, each message is scored on
its own, so one bad message cannot fail the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferline.dataplane import DataPlane
from inferline.errors import InferlineError
from inferline.lifecycle import RegistrySync
from inferline.monitoring.telemetry import Telemetry
from inferline.registry.store import Registry
from inferline.settings import Settings, TensorSpec
from inferline.streaming.messages import Parsed, Scored, split_outputs
from inferline.types import InferRequest, Tensor, datatype_of

__all__ = ["EmbeddedScorer"]

logger = logging.getLogger(__name__)

PROTOCOL = "stream"


class EmbeddedScorer:
    """Scores with a model loaded in this process (folder or registry)."""

    def __init__(self, settings: Settings, model: str, version: str | None = None) -> None:
        self.settings = settings
        self.model = model
        self.version = version
        self.telemetry = Telemetry(settings)
        self.plane = DataPlane(settings, observers=self.telemetry.observers())
        self.sync: RegistrySync | None = None
        if settings.model_dir is None:
            registry = Registry(settings.registry_database, settings.artifact_root)
            self.sync = RegistrySync(registry, self.plane, settings.registry_poll_seconds)

    @property
    def metrics_registry(self) -> Any:
        """The Prometheus registry the data plane's metrics live in (None: metrics off)."""
        metrics = self.telemetry.metrics
        return metrics.registry if metrics is not None else None

    async def start(self) -> None:
        await self.plane.start(scan=self.sync is None)
        await self.telemetry.start(self.plane)
        if self.sync is not None:
            await self.sync.start()
        self.plane.resolve(self.model, self.version)  # ModelNotFound now, not per batch

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        await self.plane.stop()
        await self.telemetry.stop()
        if self.sync is not None:
            self.sync.registry.close()

    def signature(self) -> Sequence[TensorSpec] | None:
        return self.plane.resolve(self.model, self.version).model.inputs

    async def score(self, items: Sequence[Parsed]) -> list[Scored | InferlineError]:
        if len(items) == 1:
            return [await self._one(items[0])]
        try:
            merged = _merge(items)
        except ValueError:  # shapes that do not stack: score each on its own
            return [await self._one(item) for item in items]
        try:
            version, outputs = await self._infer(merged, items[0].id)
            pieces = split_outputs(outputs, items)
        except InferlineError:
            return [await self._one(item) for item in items]
        return [Scored(piece, version) for piece in pieces]

    async def _one(self, item: Parsed) -> Scored | InferlineError:
        try:
            version, outputs = await self._infer(item.inputs, item.id)
        except InferlineError as exc:
            return exc
        return Scored(outputs, version)

    async def _infer(
        self, inputs: dict[str, np.ndarray[Any, Any]], request_id: str
    ) -> tuple[str, dict[str, np.ndarray[Any, Any]]]:
        specs = {s.name: s for s in self.signature() or ()}
        tensors = [
            Tensor(
                name,
                specs[name].datatype if name in specs else datatype_of(array),
                list(array.shape),
                array,
            )
            for name, array in inputs.items()
        ]
        response = await self.plane.infer(
            self.model,
            self.version,
            InferRequest(inputs=tensors, id=request_id),
            protocol=PROTOCOL,
            request_id=request_id,
        )
        return response.model_version, {t.name: t.data for t in response.outputs}


def _merge(items: Sequence[Parsed]) -> dict[str, np.ndarray[Any, Any]]:
    names = list(items[0].inputs)
    if any(list(item.inputs) != names for item in items):
        raise ValueError("messages name different inputs")
    return {name: np.concatenate([item.inputs[name] for item in items]) for name in names}
