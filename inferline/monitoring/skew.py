"""What a version served, as columns: the sliding drift window and the blocks for skew.

Training/serving skew is a difference that is there from a version's first
requests (a feature computed differently online than in training); slow drift
creeps in later. So the rows a version serves are also cut into consecutive blocks
of ``skew_rows``, from the first one on; each complete block is compared with the
reference once, and the latest judged block is the skew verdict. A verdict is
never final: a fixed pipeline, or a chance alarm, clears with the next clean block,
and the first block's verdict stays in the report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from inferline.monitoring.drift import compare
from inferline.runtimes.base import count_rows
from inferline.settings import DriftSettings

__all__ = ["ServedRows", "SkewBlocks", "columns", "skew_report"]

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


class SkewBlocks:
    """Consecutive blocks of ``needed`` rows; the event loop fills, a thread judges.

    ``add`` only appends (and hands a full block over through one-slot deques, whose
    ``append`` and ``popleft`` are atomic under the GIL); ``take`` gives the thread the
    first block if it was never judged, else the latest full block not judged yet.
    Blocks that fill between two judgements are skipped: the newest is what the
    verdict should describe.
    """

    def __init__(self, needed: int) -> None:
        self.needed = needed
        #: Rows in the block being filled.
        self.rows = 0
        #: Complete blocks so far.
        self.blocks = 0
        self._entries: list[Entry] = []
        #: (block number from 1, its entries), waiting to be judged.
        self._first: deque[tuple[int, list[Entry]]] = deque(maxlen=1)
        self._full: deque[tuple[int, list[Entry]]] = deque(maxlen=1)
        #: The latest verdict, and the first block's (both set by the judging thread).
        self.report: dict[str, Any] | None = None
        self.first: dict[str, Any] | None = None

    def add(self, at: float, inputs: Tensors, outputs: Tensors) -> None:
        rows = count_rows(outputs)
        self._entries.append((at, rows, inputs, outputs))
        self.rows += rows
        if self.rows >= self.needed:
            self.blocks += 1
            (self._full if self.blocks > 1 else self._first).append((self.blocks, self._entries))
            self._entries, self.rows = [], 0

    def take(self) -> tuple[int, list[Entry]] | None:
        for ready in (self._first, self._full):
            try:
                return ready.popleft()
            except IndexError:
                continue
        return None


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
    profile: Mapping[str, Any], block: list[Entry], needed: int, settings: DriftSettings
) -> dict[str, Any]:
    """One block against the reference: any drifted input feature is skew."""
    served, _ = columns(block, list(profile.get("features", {})), needed)
    result = compare(profile.get("features", {}), served, settings, profile.get("rows"))
    return {
        "rows": max((len(v) for v in served.values()), default=0),
        "skewed": bool(result["drifted"]),
        "features": result["drifted"],
        "share": result["share"],
        "columns": result["columns"],
    }
