"""Does the optimised model answer like its source? Reference rows, then output by output.

Rows come from, in order: a features file (``--data``), rows drawn from the
version's stored reference profile (each feature's quantile bins, weighted by
their counts, uniform inside a bin, fixed seed), or standard-normal rows shaped by
the signature, with a warning that no reference data was available.

Float outputs agree when ``|after - before| <= tolerance * max(1, |before|)``:
absolute for probabilities and values within ±1, relative beyond (a float32
regressor predicting 1e5 cannot agree to 1e-4 absolutely). Labels must all agree,
except on rows where the source's two most probable classes are within
``2 * tolerance`` of each other: there either answer is within tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferline.errors import BadRequest
from inferline.lifecycle.changes import _reference_inputs
from inferline.registry.profile import ReferenceData, reference_data
from inferline.registry.records import ModelVersion
from inferline.runtimes.base import Model, Outputs, count_rows
from inferline.settings import TensorSpec
from inferline.types import DATATYPES

__all__ = ["FLOAT_TOLERANCE", "INT8_TOLERANCE", "OutputCheck", "Reference", "compare", "reference"]

#: Default tolerances: float32 arithmetic, and int8 weights.
FLOAT_TOLERANCE = 1e-4
INT8_TOLERANCE = 5e-2
ROWS = 1000
MAX_ROWS = 10_000
SEED = 0

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Reference:
    inputs: dict[str, Array]
    rows: int
    #: Where the rows came from, for the report.
    origin: str
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """One output compared on the reference rows."""

    name: str
    kind: str  # "values" or "labels"
    ok: bool
    #: Values: the largest absolute difference. Labels: 0 (see ``changed``).
    max_difference: float
    #: Values past the tolerance, or labels changed outside near-ties.
    changed: int
    #: Labels that changed where the source's top two classes were within tolerance.
    ties: int
    rows: int
    detail: str = ""

    def summary(self) -> str:
        if self.detail:
            return self.detail
        if self.kind == "labels":
            ties = f" (+{self.ties} near-ties)" if self.ties else ""
            return f"{self.changed} of {self.rows} labels changed{ties}"
        return f"max |difference| {self.max_difference:.2e}"


def reference(
    model: Model,
    record: ModelVersion,
    data: Path | ReferenceData | None,
    rows: int = ROWS,
) -> Reference:
    """The rows to compare on: ``data``, else the stored profile, else random normal rows."""
    if data is not None:
        chosen = reference_data(data)
        inputs = _reference_inputs(model, chosen.read())
        count = count_rows(inputs)
        name = chosen.path.name
        if count == 0:
            raise BadRequest(f"{name} holds no rows")
        if count > MAX_ROWS:
            inputs = {name: array[:MAX_ROWS] for name, array in inputs.items()}
            count = MAX_ROWS
        return Reference(inputs, count, f"{count} rows of {name}")
    rng = np.random.default_rng(SEED)
    features = (record.profile or {}).get("features") or {}
    sampled = _from_profile(model.inputs, features, rows, rng)
    if sampled is not None:
        return Reference(sampled, rows, f"{rows} rows drawn from the stored reference profile")
    inputs = {spec.name: _normal(spec, rows, rng) for spec in model.inputs}
    warning = (
        f"version {record.version} has no reference profile to draw rows from, and no --data "
        "was given: checked on random normal rows, which may miss the model's real input range"
    )
    return Reference(inputs, rows, f"{rows} random normal rows", warning)


def _from_profile(
    specs: list[TensorSpec], features: dict[str, Any], rows: int, rng: np.random.Generator
) -> dict[str, Array] | None:
    """Rows drawn from the profile's bins, or None when it does not cover the inputs."""
    numeric = {n: f for n, f in features.items() if f.get("kind") == "numeric" and f.get("count")}
    if len(specs) == 1 and len(specs[0].shape) == 2:
        spec = specs[0]
        if len(numeric) != len(features) or len(numeric) != spec.shape[1]:
            return None
        columns = [_sample(f, rows, rng) for f in numeric.values()]
        return {spec.name: np.column_stack(columns).astype(_dtype(spec))}
    if not all(len(s.shape) == 1 and s.name in numeric for s in specs):
        return None
    return {s.name: _sample(numeric[s.name], rows, rng).astype(_dtype(s)) for s in specs}


def _sample(feature: dict[str, Any], rows: int, rng: np.random.Generator) -> Array:
    edges = np.asarray(feature.get("edges", [feature.get("mean", 0.0)]), dtype=np.float64)
    if edges.size < 2:
        return np.full(rows, edges[0] if edges.size else 0.0)
    counts = np.asarray(feature.get("counts", []), dtype=np.float64)
    if counts.size != edges.size - 1 or counts.sum() <= 0:
        counts = np.ones(edges.size - 1)
    bins = rng.choice(counts.size, size=rows, p=counts / counts.sum())
    return rng.uniform(edges[bins], edges[bins + 1])


def _normal(spec: TensorSpec, rows: int, rng: np.random.Generator) -> Array:
    if spec.datatype == "BYTES":
        raise BadRequest(
            f"input {spec.name!r} is BYTES: random rows cannot stand in for text; "
            "pass --data with real features"
        )
    shape = [rows if i == 0 else (d if d > 0 else 1) for i, d in enumerate(spec.shape)]
    return rng.normal(size=shape).astype(_dtype(spec))


def _dtype(spec: TensorSpec) -> Any:
    return DATATYPES[spec.datatype].dtype


def compare(
    before: Outputs, after: Outputs, specs: list[TensorSpec], tolerance: float
) -> list[OutputCheck]:
    """Each served output of ``after`` against ``before`` on the same rows."""
    probabilities = next(
        (np.asarray(a) for a in before.values() if np.asarray(a).ndim == 2 and a.dtype.kind == "f"),
        None,
    )
    checks = []
    for spec in specs:
        old = np.asarray(before[spec.name])
        rows = int(old.shape[0]) if old.ndim else 1
        if spec.name not in after:
            checks.append(_failed(spec.name, rows, f"output {spec.name!r} is missing"))
            continue
        new = np.asarray(after[spec.name])
        if old.shape != new.shape:
            detail = f"output {spec.name!r} has shape {list(new.shape)}, not {list(old.shape)}"
            checks.append(_failed(spec.name, rows, detail))
        elif old.dtype.kind in "fc" and new.dtype.kind in "fc":
            checks.append(_values(spec.name, old, new, tolerance, rows))
        else:
            checks.append(_labels(spec.name, old, new, probabilities, tolerance, rows))
    return checks


def _failed(name: str, rows: int, detail: str) -> OutputCheck:
    return OutputCheck(name, "values", False, float("inf"), rows, 0, rows, detail)


def _values(name: str, old: Array, new: Array, tolerance: float, rows: int) -> OutputCheck:
    before, after = old.astype(np.float64), new.astype(np.float64)
    with np.errstate(invalid="ignore"):
        difference = np.abs(after - before)
    both_nan = np.isnan(before) & np.isnan(after)
    difference = np.where(both_nan, 0.0, np.nan_to_num(difference, nan=np.inf))
    allowed = tolerance * np.maximum(1.0, np.abs(np.nan_to_num(before)))
    over = int(np.count_nonzero(difference > allowed))
    largest = float(difference.max()) if difference.size else 0.0
    return OutputCheck(name, "values", over == 0, largest, over, 0, rows)


def _labels(
    name: str, old: Array, new: Array, probabilities: Array | None, tolerance: float, rows: int
) -> OutputCheck:
    differs = _text(old) != _text(new)
    if differs.ndim > 1:
        differs = differs.reshape(differs.shape[0], -1).any(axis=1)
    near_tie = np.zeros(differs.shape, dtype=bool)
    if (
        probabilities is not None
        and probabilities.shape[0] == differs.shape[0]
        and probabilities.shape[1] >= 2
    ):
        top = np.sort(probabilities.astype(np.float64), axis=1)[:, -2:]
        near_tie = (top[:, -1] - top[:, 0]) <= 2 * tolerance
    changed = int(np.count_nonzero(differs & ~near_tie))
    ties = int(np.count_nonzero(differs & near_tie))
    return OutputCheck(name, "labels", changed == 0, 0.0, changed, ties, rows)


def _text(array: Array) -> Array:
    """Labels comparable across runtimes: bytes and str alike, numbers as they are."""
    if array.dtype.kind in "OSU":
        return np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)],
            dtype=object,
        ).reshape(array.shape)
    return array
