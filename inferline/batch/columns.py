"""Table columns to model inputs, model outputs to table columns.

The mapping (documented in docs/batch.md):

- a model with one input of shape ``[-1, F]`` takes F feature columns: ``features``
  if given, else every column not kept as pass-through, in file order;
- otherwise each input takes columns by name: ``[-1]`` and ``[-1, 1]`` the column
  named as the input, ``[-1, k]`` the columns ``<name>_0`` .. ``<name>_{k-1}``;
- each output becomes columns the same way: ``[-1]`` (or ``[-1, 1]``) one column
  named as the output, ``[-1, k]`` the columns ``<name>_0`` .. ``<name>_{k-1}``.

Values convert to the signature's datatype only without loss, as the data plane's
validation does; a null, an unparsable string or a value that does not fit rejects
its row (and only its row), found with vectorised checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.batch.io import pyarrow
from inferline.errors import InvalidInput
from inferline.settings import TensorSpec
from inferline.types import DATATYPES

__all__ = ["InputColumns", "OutputColumns", "Plan", "convert", "make_plan", "range_mask"]

_FLOAT = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|(?i:inf|infinity|nan))$"
_INT = r"^[+-]?\d+$"
_BOOL = r"^(?i:true|false|1|0)$"


@dataclass(frozen=True, slots=True)
class InputColumns:
    spec: TensorSpec
    columns: tuple[str, ...]

    @property
    def flat(self) -> bool:
        """One column feeding a ``[-1]`` input (no trailing dimension)."""
        return len(self.spec.shape) == 1


@dataclass(frozen=True, slots=True)
class OutputColumns:
    name: str
    datatype: str
    #: Columns this output fills; ``(name,)`` for a 1-D (or width-1) output.
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    inputs: tuple[InputColumns, ...]
    outputs: tuple[OutputColumns, ...]
    keep: tuple[str, ...]

    @property
    def read_columns(self) -> list[str]:
        """Columns to read: the kept ones, then the model's, each once."""
        names = list(self.keep) + [c for i in self.inputs for c in i.columns]
        return list(dict.fromkeys(names))

    def text_types(self, fmt: str) -> dict[str, Any]:
        """Arrow types forced on model columns when reading CSV (strings) or JSON lines."""
        pa = pyarrow()
        types: dict[str, Any] = {}
        for entry in self.inputs:
            kind = DATATYPES[entry.spec.datatype].dtype.kind
            if fmt == "csv" or entry.spec.datatype == "BYTES":
                wanted = pa.string()
            elif kind == "b":
                wanted = pa.bool_()
            else:
                wanted = pa.float64() if kind == "f" else pa.int64()
            types.update(dict.fromkeys(entry.columns, wanted))
        return types

    def output_schema(self, source: Any) -> Any:
        """Kept columns (their source types), then one column per prediction."""
        pa = pyarrow()
        fields = [source.field(name) for name in self.keep]
        for out in self.outputs:
            fields += [pa.field(c, arrow_type(out.datatype)) for c in out.columns]
        return pa.schema(fields)


def arrow_type(datatype: str) -> Any:
    pa = pyarrow()
    if datatype == "BYTES":
        return pa.string()
    return pa.from_numpy_dtype(DATATYPES[datatype].dtype)


#: What each line of the reject file starts with, before the kept columns.
REJECT_FIELDS = ("row", "error")


def make_plan(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[tuple[TensorSpec, int | None]],
    columns: Sequence[str],
    keep: Sequence[str] = (),
    features: Sequence[str] | None = None,
) -> Plan:
    """Map a file's columns to a model's inputs; ``outputs`` pairs a spec with its width."""
    missing = [name for name in [*keep, *(features or ())] if name not in columns]
    if missing:
        raise InvalidInput(f"column(s) not in the input: {', '.join(missing)}")
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1:
        spec = inputs[0]
        chosen = list(features) if features else [c for c in columns if c not in keep]
        width = spec.shape[1]
        if width != -1 and len(chosen) != width:
            hint = "" if features else " (pass --features, or --keep the others)"
            raise InvalidInput(
                f"input {spec.name!r} takes {width} features; {len(chosen)} columns were "
                f"chosen{hint}: {', '.join(chosen)}"
            )
        planned = [InputColumns(spec, tuple(chosen))]
    else:
        if features:
            raise InvalidInput("--features applies to a model with one 2-D input")
        planned = [InputColumns(spec, _named(spec, "input")) for spec in inputs]
        absent = [c for entry in planned for c in entry.columns if c not in columns]
        if absent:
            raise InvalidInput(f"the model needs column(s) missing from the input: {absent}")
    outs = tuple(
        OutputColumns(spec.name, spec.datatype, _output_columns(spec.name, width))
        for spec, width in outputs
    )
    made = [c for out in outs for c in out.columns]
    clash = sorted(set(made) & set(keep))
    if clash:
        raise InvalidInput(f"kept column(s) {clash} have the name of a prediction column")
    # A reject line is {"row", "error", *kept}: a kept "row" would overwrite the position.
    clash = sorted(set(REJECT_FIELDS) & set(keep))
    if clash:
        raise InvalidInput(
            f"kept column(s) {clash} have the name of a reject-file field "
            f"({', '.join(REJECT_FIELDS)}); rename them in the input or leave them out of --keep"
        )
    return Plan(tuple(planned), outs, tuple(keep))


def _named(spec: TensorSpec, kind: str) -> tuple[str, ...]:
    shape = spec.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return (spec.name,)
    if len(shape) == 2 and shape[1] > 1:
        return tuple(f"{spec.name}_{i}" for i in range(shape[1]))
    raise InvalidInput(
        f"{kind} {spec.name!r} has shape {shape}; batch files map 1-D and [-1, k] tensors only"
    )


def _output_columns(name: str, width: int | None) -> tuple[str, ...]:
    if width is None or width == 1:
        return (name,)
    return tuple(f"{name}_{i}" for i in range(width))


def convert(plan: Plan, table: Any) -> tuple[dict[str, np.ndarray[Any, Any]], dict[int, str]]:
    """The model's input arrays for every row, and the first error of each bad row."""
    errors: dict[int, str] = {}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    rows = table.num_rows
    for entry in plan.inputs:
        dtype = DATATYPES[entry.spec.datatype].dtype
        parts = [
            _column(name, table.column(name), entry.spec.datatype, errors) for name in entry.columns
        ]
        if entry.flat:
            arrays[entry.spec.name] = parts[0]
            continue
        data = np.empty((rows, len(parts)), dtype=dtype)
        for j, part in enumerate(parts):
            data[:, j] = part
        arrays[entry.spec.name] = data
    return arrays, errors


def _column(name: str, column: Any, datatype: str, errors: dict[int, str]) -> Any:
    pa = pyarrow()
    import pyarrow.compute as pc

    def reject(mask: np.ndarray[Any, Any], message: Any) -> None:
        for i in np.flatnonzero(mask):
            errors.setdefault(int(i), message(int(i)))

    if column.null_count:
        reject(
            column.is_null().to_numpy(zero_copy_only=False), lambda i: f"column {name!r} is null"
        )
    is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if datatype == "BYTES":
        if not (is_text or pa.types.is_binary(column.type) or pa.types.is_null(column.type)):
            raise InvalidInput(f"column {name!r} has type {column.type}; BYTES inputs take text")
        return pc.cast(column, pa.binary()).to_numpy(zero_copy_only=False)
    dtype = DATATYPES[datatype].dtype
    if is_text:
        pattern, target, word = {
            "b": (_BOOL, pa.bool_(), "true or false"),
            "f": (_FLOAT, pa.float64(), "a number"),
        }.get(dtype.kind, (_INT, pa.int64(), "an integer"))
        column, unparsable = _parse(column, pattern, target)
        if unparsable is not None:
            mask, originals = unparsable
            reject(mask, lambda i: f"column {name!r}: {originals[i].as_py()!r} is not {word}")
    elif pa.types.is_null(column.type):
        column = pa.nulls(len(column), pa.from_numpy_dtype(dtype))
    kind_ok = (
        pa.types.is_boolean(column.type)
        if dtype.kind == "b"
        else pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    )
    if not kind_ok:
        raise InvalidInput(
            f"column {name!r} has type {column.type}; the model expects {datatype} there"
        )
    if column.null_count:
        column = pc.fill_null(column, False if dtype.kind == "b" else 0)
    source = column.to_numpy()
    values, bad_cast, reason = _cast(source, dtype, datatype)
    if bad_cast is not None:
        reject(bad_cast, lambda i: f"column {name!r}: {source[i].item()!r} {reason(i)}")
    return values


def _parse(column: Any, pattern: str, target: Any) -> tuple[Any, tuple[Any, Any] | None]:
    """Strings to ``target``; unparsable ones become null and are reported."""
    pa = pyarrow()
    import pyarrow.compute as pc

    try:
        return pc.cast(column, target), None
    except pa.ArrowInvalid:
        pass
    ok = pc.fill_null(pc.match_substring_regex(column, pattern), True)
    cleaned = pc.if_else(ok, column, pa.scalar(None, column.type))
    bad = np.logical_not(ok.to_numpy(zero_copy_only=False))
    return pc.cast(cleaned, target), (bad, column.combine_chunks())


def _cast(
    source: np.ndarray[Any, Any], dtype: np.dtype[Any], datatype: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None, Any]:
    """``source`` as ``dtype``; rows that would lose their value are flagged."""
    if source.dtype == dtype or dtype.kind == "b":
        return source.astype(dtype, copy=False), None, None
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            values = source.astype(dtype)
        bad = np.isinf(values) & ~np.isinf(source)
        return values, (bad if bad.any() else None), lambda i: f"does not fit {datatype}"
    info = np.iinfo(dtype)
    if source.dtype.kind == "f":
        integral = np.isfinite(source) & (np.floor(source) == source)
        low = -(2.0 ** (info.bits - 1)) if info.min else 0.0
        high = 2.0 ** (info.bits - (1 if info.min else 0))
        bad = ~(integral & (source >= low) & (source < high))

        def why(i: int) -> str:
            return f"does not fit {datatype}" if integral[i] else "is not an integer"

    elif source.dtype.kind == "u":
        bad = source > info.max
        why = _fit(datatype)
    else:
        bad = (source > info.max) | (source < info.min)
        why = _fit(datatype)
    if not bad.any():
        return source.astype(dtype), None, None
    values = np.where(bad, 0, source).astype(dtype)
    return values, bad, why


def _fit(datatype: str) -> Any:
    return lambda i: f"does not fit {datatype}"


def range_mask(data: np.ndarray[Any, Any], spec: TensorSpec) -> np.ndarray[Any, Any]:
    """Rows outside the signature's declared ranges: the data plane's rule, vectorised."""
    rows = np.zeros(len(data), dtype=bool)
    if data.dtype.kind not in "biuf" or data.size == 0:
        return rows
    for bound, below in ((spec.min, True), (spec.max, False)):
        if bound is None:
            continue
        if isinstance(bound, list) and (data.ndim == 0 or data.shape[-1] != len(bound)):
            return rows
        limit = np.asarray(bound) if isinstance(bound, list) else bound
        bad = np.less(data, limit) if below else np.greater(data, limit)
        if data.dtype.kind == "f":
            bad |= np.isnan(data)
        rows |= bad.reshape(len(data), -1).any(axis=1)
    return rows
