"""Reference data profiles: what training data looked like, for drift and skew later.

Per feature: quantile bin edges with counts and moments for numbers, value
frequencies for categories; the same for each prediction column. Stored as JSON
with the version at registration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferline.errors import BadRequest

__all__ = ["ReferenceData", "profile_columns", "read_reference", "reference_data", "select_columns"]

BINS = 10
TOP_CATEGORIES = 50


def read_reference(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Columns of a Parquet, CSV or JSON-lines file as numpy arrays."""
    try:
        import pyarrow.csv as pa_csv
        import pyarrow.json as pa_json
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise BadRequest("--reference needs pyarrow: pip install 'inferline[batch]'") from exc
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pa_csv.read_csv(path)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            table = pa_json.read_json(path)
        else:
            raise BadRequest(f"reference data {path.name}: expected .parquet, .csv or .jsonl")
    except OSError as exc:
        raise BadRequest(f"cannot read reference data {path}: {exc}") from exc
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """A reference data file, and which of its columns are the model's features.

    ``features`` names them, in the model's order; ``exclude`` drops columns that are
    not features (an id, the label). Neither: every column, in the file's order.
    """

    path: Path
    features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def read(self) -> dict[str, np.ndarray[Any, Any]]:
        columns = read_reference(self.path)
        return select_columns(columns, self.features, self.exclude, self.path.name)


def reference_data(source: Path | ReferenceData) -> ReferenceData:
    """A path alone means every column."""
    return source if isinstance(source, ReferenceData) else ReferenceData(source)


def select_columns(
    columns: dict[str, np.ndarray[Any, Any]],
    features: Sequence[str] | None,
    exclude: Sequence[str],
    source: str,
) -> dict[str, np.ndarray[Any, Any]]:
    """The chosen columns, in order; a name the data lacks is refused, naming its columns."""
    if features and exclude:
        raise BadRequest("choose the reference's columns with --features or --exclude, not both")
    unknown = [name for name in [*(features or ()), *exclude] if name not in columns]
    if unknown:
        raise BadRequest(
            f"reference data {source} has no column(s) {', '.join(unknown)}; "
            f"its columns: {', '.join(columns)}"
        )
    dropped = set(exclude)
    chosen = list(features) if features else [name for name in columns if name not in dropped]
    if not chosen:
        raise BadRequest(f"reference data {source}: --exclude leaves no columns")
    return {name: columns[name] for name in chosen}


def profile_columns(columns: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """A JSON-ready profile of each 1-D column."""
    return {name: _profile(values) for name, values in columns.items()}


def _profile(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    if values.dtype.kind in "biuf":
        numbers = values.astype(np.float64)
        finite = numbers[np.isfinite(numbers)]
        nulls = int(numbers.size - finite.size)
        if finite.size == 0:
            return {"kind": "numeric", "count": 0, "nulls": nulls}
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)))
        counts = np.histogram(finite, bins=edges)[0] if edges.size > 1 else np.array([finite.size])
        return {
            "kind": "numeric",
            "count": int(finite.size),
            "nulls": nulls,
            "min": float(finite.min()),
            "max": float(finite.max()),
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "edges": edges.tolist(),
            "counts": counts.tolist(),
        }
    texts = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    present = texts[np.array([v not in ("None", "nan") for v in texts], dtype=bool)]
    uniques, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:TOP_CATEGORIES]
    return {
        "kind": "categorical",
        "count": int(present.size),
        "nulls": int(texts.size - present.size),
        "frequencies": {str(uniques[i]): int(counts[i]) for i in order},
    }
