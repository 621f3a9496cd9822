"""Score one chunk of a table through the data plane, rejecting bad rows only.

Both engines call :meth:`Scorer.score`: the local one in its worker threads, the
Spark one inside ``mapInArrow`` on each executor. The model sits in an in-process
:class:`~inferline.dataplane.DataPlane`, so validation and runtime are the ones
online serving uses, and the answers are the same.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferline.batch.columns import REJECT_FIELDS, Plan, convert, range_mask
from inferline.batch.io import pyarrow
from inferline.dataplane import DataPlane
from inferline.errors import InvalidInput, ModelLoadError
from inferline.runtimes.base import Model, sample_inputs
from inferline.runtimes.loader import load_model
from inferline.settings import BatchingSettings, ModelSettings, Settings, TensorSpec
from inferline.types import InferRequest, Tensor
from inferline.validation import check_inputs

__all__ = ["ChunkResult", "ModelHost", "Scorer"]


class ModelHost:
    """One model version in a private data plane, callable from plain threads.

    The data plane is async; batch code is not. The host runs an event loop in a
    thread of its own and hands it coroutines. Batch sends whole chunks, so the
    model loads with dynamic batching and request timeouts off and its sync
    ``predict`` in the thread pool (chunks run side by side, one per core).
    """

    def __init__(
        self, settings: ModelSettings, version: str, version_dir: Path, server: Settings
    ) -> None:
        self.name = settings.name
        self.version = version
        self._settings = settings.model_copy(
            update={"executor": "thread", "batching": BatchingSettings(), "timeout_ms": None}
        )
        self._version_dir = version_dir
        self._plane = DataPlane(server)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="inferline-batch-loop", daemon=True
        )
        self.model: Model | None = None

    def start(self) -> ModelHost:
        self._thread.start()
        self.model = self._run(self._load()).result()
        return self

    async def _load(self) -> Model:
        await self._plane.start(scan=False)
        model = await load_model(
            self._settings, self.version, self._version_dir, self._plane.executor
        )
        await self._plane.add(model)
        return model

    def _run(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._loaded().inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._loaded().outputs

    def _loaded(self) -> Model:
        if self.model is None:
            raise ModelLoadError("ModelHost.start() has not run")
        return self.model

    def infer(self, arrays: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """The data plane's answer (validation included) for one batch of rows."""
        tensors = [
            Tensor(name, _datatype(self, name), list(a.shape), a) for name, a in arrays.items()
        ]
        request = InferRequest(inputs=tensors)
        response = self._run(self._plane.infer(self.name, self.version, request)).result()
        return {tensor.name: tensor.data for tensor in response.outputs}

    def output_widths(self) -> list[tuple[TensorSpec, int | None]]:
        """Each output with its column count (None: 1-D); unknown widths from a zero row."""
        widths: list[tuple[TensorSpec, int | None]] = []
        probed: dict[str, np.ndarray[Any, Any]] | None = None
        for spec in self.outputs:
            if len(spec.shape) == 2 and spec.shape[1] >= 0:
                widths.append((spec, spec.shape[1]))
                continue
            if len(spec.shape) == 1:
                widths.append((spec, None))
                continue
            if probed is None:
                try:
                    probed = self.infer(sample_inputs(self.inputs))
                except Exception as exc:
                    raise ModelLoadError(
                        f"model {self.name!r}: output {spec.name!r} has shape {spec.shape} and a "
                        f"row of zeros cannot be scored to learn it ({exc}); declare 'outputs' "
                        "in model-settings.yaml"
                    ) from exc
            shape = probed[spec.name].shape
            widths.append((spec, shape[1] if len(shape) == 2 else None))
        return widths

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._plane.stop()).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()


def _datatype(host: ModelHost, name: str) -> str:
    for spec in host.inputs:
        if spec.name == name:
            return spec.datatype
    raise InvalidInput(f"unknown input {name!r}")


@dataclass(slots=True)
class ChunkResult:
    #: Kept columns and predictions for the rows that scored, in input order.
    table: Any
    #: ``row`` (0-based in the whole input), ``error``, then the kept columns.
    rejects: Any
    rows: int


class Scorer:
    """Chunk in, predictions and rejects out; the same code for every engine."""

    def __init__(self, host: ModelHost, plan: Plan, schema: Any) -> None:
        self.host = host
        self.plan = plan
        self.schema = schema

    def score(self, table: Any, offset: int) -> ChunkResult:
        pa = pyarrow()
        arrays, errors = convert(self.plan, table)
        good = np.ones(table.num_rows, dtype=bool)
        good[list(errors)] = False
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        if good.any():
            try:
                outputs = self.host.infer(_rows(arrays, good))
            except InvalidInput:
                found = self._isolate(arrays, good)
                if not found:
                    raise
                errors.update(found)
                good[list(found)] = False
                if good.any():
                    outputs = self.host.infer(_rows(arrays, good))
        kept = table.select(list(self.plan.keep))
        scored = kept if good.all() else kept.filter(pa.array(good))
        columns = list(scored.columns)
        for out in self.plan.outputs:
            columns += _prediction_columns(out.columns, outputs.get(out.name), int(good.sum()))
        result = pa.Table.from_arrays(
            [pa.chunked_array([c]) if isinstance(c, pa.Array) else c for c in columns],
            names=self.schema.names,
        )
        if not result.schema.equals(self.schema):
            result = result.cast(self.schema)
        return ChunkResult(result, self._rejects(kept, errors, offset), table.num_rows)

    def _isolate(
        self, arrays: dict[str, np.ndarray[Any, Any]], good: np.ndarray[Any, Any]
    ) -> dict[int, str]:
        """Rows outside declared ranges, each with the message online serving gives it."""
        specs = self.host.inputs
        bad = np.zeros(len(good), dtype=bool)
        for spec in specs:
            bad |= range_mask(arrays[spec.name], spec)
        found: dict[int, str] = {}
        for i in np.flatnonzero(bad & good):
            row = [
                Tensor(
                    s.name, s.datatype, [1, *arrays[s.name].shape[1:]], arrays[s.name][i : i + 1]
                )
                for s in specs
            ]
            try:
                check_inputs(self.host.name, row, specs)
            except InvalidInput as exc:
                found[int(i)] = exc.message
        return found

    def _rejects(self, kept: Any, errors: dict[int, str], offset: int) -> Any:
        pa = pyarrow()
        order = sorted(errors)
        index = pa.array(order, type=pa.int64())
        columns = [
            pa.array([offset + i for i in order], type=pa.int64()),
            pa.array([errors[i] for i in order], type=pa.string()),
            *kept.take(index).columns,
        ]
        return pa.Table.from_arrays(columns, names=[*REJECT_FIELDS, *kept.column_names])


def _rows(
    arrays: dict[str, np.ndarray[Any, Any]], good: np.ndarray[Any, Any]
) -> dict[str, np.ndarray[Any, Any]]:
    if good.all():
        return arrays
    return {name: array[good] for name, array in arrays.items()}


def _prediction_columns(names: tuple[str, ...], data: Any, rows: int) -> list[Any]:
    pa = pyarrow()
    if data is None:
        return [pa.nulls(rows) for _ in names]
    if data.ndim == 2 and len(names) == 1:
        data = data[:, 0]
    parts = [data] if data.ndim == 1 else [data[:, j] for j in range(data.shape[1])]
    if len(parts) != len(names):
        raise InvalidInput(f"output has {len(parts)} columns; {len(names)} were expected")
    arrays = []
    for part in parts:
        if part.dtype.kind in "OSU":
            arrays.append(pa.array(part.tolist(), type=pa.binary()).cast(pa.string()))
        else:
            arrays.append(pa.array(np.ascontiguousarray(part)))
    return arrays
