"""What a version served, as columns: the sliding drift window and the first rows for skew.

Training/serving skew is a difference that is there from a version's first
requests (a feature computed differently online than in training); slow drift
creeps in later. So the first ``skew_rows`` rows a version serves are kept apart,
compared with the reference once, and reported on their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from inferline.monitoring.drift import compare
from inferline.runtimes.base import count_rows
from inferline.settings import DriftSettings

__all__ = ["FirstRows", "ServedRows", "columns", "skew_report"]

Array = np.ndarray[Any, Any]
Tensors = Mapping[str, Array]
#: (arrival time, rows, inputs, outputs) of one answered request.
Entry = tuple[float, int, Tensors, Tensors]


class ServedRows:
    """The most recent answered requests holding at least ``max_rows`` rows."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self._entries: deque[Entry] = deque()

    def add(self, at: float, inputs: Tensors, outputs: Tensors) -> None:
        """O(1) amortised; keeps references to the arrays, copies nothing."""
        rows = count_rows(outputs)
        self._entries.append((at, rows, inputs, outputs))
        self.rows += rows
        while self._entries and self.rows - self._entries[0][1] >= self.max_rows:
            self.rows -= self._entries.popleft()[1]

    def snapshot(self, since: float | None = None) -> list[Entry]:
        """A copy (``deque.copy`` is atomic under the GIL, so a thread may call this)."""
        return [e for e in self._entries.copy() if since is None or e[0] >= since]


class FirstRows:
    """The first ``needed`` rows a version served; then it stops taking more."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.rows = 0
        self.entries: list[Entry] = []
        #: The skew report, computed once when full.
        self.report: dict[str, Any] | None = None

    @property
    def full(self) -> bool:
        return self.rows >= self.needed

    def add(self, at: float, inputs: Tensors, outputs: Tensors) -> None:
        if self.rows < self.needed:
            rows = count_rows(outputs)
            self.entries.append((at, rows, inputs, outputs))
            self.rows += rows


def columns(
    entries: Iterable[Entry], feature_names: list[str], max_rows: int | None = None
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Served inputs and predictions as named 1-D columns, named as the profile names them.

    A single 2-D input takes the profile's feature names (the reference file's
    columns); 1-D inputs keep their names; an output of shape [-1, k] becomes
    ``<name>_<i>``, as at registration.
    """
    features: dict[str, list[Array]] = {}
    predictions: dict[str, list[Array]] = {}
    for _, rows, inputs, outputs in entries:
        if rows == 0:
            continue
        for name, array in inputs.items():
            wide = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
            if array.ndim <= 1:
                features.setdefault(name, []).append(wide[:, 0])
                continue
            width = wide.shape[1]
            if len(inputs) == 1 and len(feature_names) >= width:
                names = feature_names[:width]
            elif width == 1:
                names = [name]
            else:
                names = [f"{name}_{i}" for i in range(width)]
            for i, column in enumerate(names):
                features.setdefault(column, []).append(wide[:, i])
        for name, array in outputs.items():
            if array.ndim == 1:
                predictions.setdefault(name, []).append(array)
                continue
            wide = array.reshape(array.shape[0], -1)
            for i in range(wide.shape[1]):
                predictions.setdefault(f"{name}_{i}", []).append(wide[:, i])
    return _joined(features, max_rows), _joined(predictions, max_rows)


def _joined(parts: dict[str, list[Array]], max_rows: int | None) -> dict[str, Array]:
    joined = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    if max_rows is None:
        return joined
    return {name: values[-max_rows:] for name, values in joined.items()}


def skew_report(
    profile: Mapping[str, Any], first: FirstRows, settings: DriftSettings
) -> dict[str, Any]:
    """First rows against the reference: any drifted input feature is skew."""
    served, _ = columns(first.entries, list(profile.get("features", {})), first.needed)
    result = compare(profile.get("features", {}), served, settings, profile.get("rows"))
    return {
        "rows": min(first.rows, first.needed),
        "skewed": bool(result["drifted"]),
        "features": result["drifted"],
        "share": result["share"],
        "columns": result["columns"],
    }
