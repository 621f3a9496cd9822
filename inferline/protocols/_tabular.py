"""JSON rows, columns and CSV text ↔ tensors, for the MLflow and TF-Serving protocols.

Both protocols send plain JSON values with no datatype: the model's signature
says what each input is, and each column is converted once, with one
``np.asarray``, into that datatype. Anything that does not fit is an
:class:`InvalidInput` naming the input and what was wrong, never a silent cast
(a float for an INT64 input is refused, not truncated).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from inferline.codecs import json_object
from inferline.errors import BadRequest, InvalidInput
from inferline.protocols.status import (
    CACHE_HEADER,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    new_request_id,
)
from inferline.settings import TensorSpec
from inferline.types import DATATYPES, Tensor

__all__ = [
    "column_lists",
    "csv_tensors",
    "from_csv",
    "json_body",
    "jsonable",
    "named_tensors",
    "records",
    "respond",
    "tensor",
]

_KINDS = {
    "b": "true/false values",
    "i": "integers",
    "u": "integers",
    "f": "numbers with a fraction",
    "U": "strings",
    "S": "strings",
    "O": "nulls or mixed values",
}


def json_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    return json_object(body)


def respond(
    request: Request,
    payload: Any,
    status: int = 200,
    model_version: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    cache: str | None = None,
) -> Response:
    """A JSON response (numpy arrays serialised natively) with the request id header."""
    all_headers = {REQUEST_ID_HEADER: request.headers.get(REQUEST_ID_HEADER) or new_request_id()}
    if model_version is not None:
        all_headers[MODEL_VERSION_HEADER] = model_version
    if cache is not None:
        all_headers[CACHE_HEADER] = cache
    all_headers.update(headers)
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status, all_headers, media_type="application/json")


def tensor(spec: TensorSpec, values: Any, *, b64: bool = False) -> Tensor:
    """One input from JSON values, in the spec's datatype (``{"b64": …}`` BYTES when allowed)."""
    if spec.datatype == "BYTES":
        array = _bytes_array(spec.name, values, b64)
    else:
        array = _numeric_array(spec.name, spec.datatype, values)
    return Tensor(spec.name, spec.datatype, list(array.shape), array)


def named_tensors(
    specs: Sequence[TensorSpec], columns: Mapping[str, Any], *, b64: bool = False
) -> list[Tensor]:
    """Inputs by name; a name the model does not have is refused with the names it has."""
    by_name = {spec.name: spec for spec in specs}
    tensors = []
    for name, values in columns.items():
        spec = by_name.get(name)
        if spec is None:
            raise InvalidInput(
                f"unknown input {name!r}; the model expects: {', '.join(by_name) or 'nothing'}"
            )
        tensors.append(tensor(spec, values, b64=b64))
    return tensors


def column_lists(rows: Sequence[Any], where: str) -> dict[str, list[Any]]:
    """Objects with the same keys (one per row) as one list per key."""
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise BadRequest(f"{where} must be a non-empty list of JSON objects")
    keys = list(rows[0])
    columns: dict[str, list[Any]] = {key: [] for key in keys}
    for i, row in enumerate(rows):
        if len(row) != len(keys) or any(key not in row for key in keys):
            raise BadRequest(
                f"{where}: row {i} has keys {sorted(row)}, row 0 has {sorted(keys)}; "
                "every row must name the same inputs"
            )
        for key in keys:
            columns[key].append(row[key])
    return columns


def csv_tensors(body: bytes, specs: list[TensorSpec]) -> list[Tensor]:
    """A CSV body (header row of column names first) as inputs: by column, or one matrix."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text: {exc}") from exc
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from exc
    lines = [line for line in lines if line]
    if not lines:
        raise BadRequest("the CSV body is empty; it needs a header row of column names")
    header, rows = lines[0], lines[1:]
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise BadRequest(f"CSV line {i} has {len(row)} fields; the header has {len(header)}")
    columns = [list(col) for col in zip(*rows, strict=True)] or [[] for _ in header]
    by_name = {spec.name: spec for spec in specs}
    if len(specs) == 1 and len(specs[0].shape) == 2 and specs[0].name not in header:
        spec = specs[0]  # one 2-D input: the CSV's columns, in order, are its features
        cells = [from_csv(spec, col).data for col in columns]
        matrix = np.column_stack(cells) if cells else np.empty((0, 0))
        return [Tensor(spec.name, spec.datatype, list(matrix.shape), matrix)]
    tensors = []
    for name, col in zip(header, columns, strict=True):
        if name not in by_name:
            raise InvalidInput(
                f"unknown CSV column {name!r}; the model expects: {', '.join(by_name)}"
            )
        tensors.append(from_csv(by_name[name], col))
    return tensors


def from_csv(spec: TensorSpec, texts: list[str]) -> Tensor:
    """One column of CSV cells in the spec's datatype (an empty float cell is NaN)."""
    name, datatype = spec.name, spec.datatype
    array: np.ndarray[Any, Any]
    if datatype == "BYTES":
        array = np.empty(len(texts), dtype=object)
        array[:] = [text.encode() for text in texts]
    elif datatype == "BOOL":
        lowered = [text.strip().lower() for text in texts]
        bad = next((t for t in lowered if t not in ("true", "false")), None)
        if bad is not None:
            raise InvalidInput(f"column {name!r} is BOOL; {bad!r} is not true or false")
        array = np.array([t == "true" for t in lowered], dtype=bool)
    else:
        target = DATATYPES[datatype].dtype
        cells = [t if t.strip() or target.kind != "f" else "nan" for t in texts]
        try:
            array = np.array(cells, dtype=target)
        except (ValueError, OverflowError) as exc:
            raise InvalidInput(f"column {name!r} is {datatype}: {exc}") from exc
    return Tensor(name, datatype, [len(texts)], array)


def _numeric_array(name: str, datatype: str, values: Any) -> np.ndarray[Any, Any]:
    target = DATATYPES[datatype].dtype
    try:
        raw = np.asarray(values)
    except ValueError as exc:
        raise InvalidInput(f"input {name!r}: rows have different lengths ({exc})") from exc
    if raw.size == 0:
        return np.empty(raw.shape, dtype=target)
    kind = raw.dtype.kind
    if kind == "O" and target.kind == "f":
        try:  # null in a float column is NaN, as pandas reads it
            raw = np.array(values, dtype=target)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"input {name!r} is {datatype}: {exc}") from exc
        kind = "f"
    allowed = "b" if target.kind == "b" else "iu" if target.kind in "iu" else "iuf"
    if kind not in allowed:
        raise InvalidInput(
            f"input {name!r} is {datatype}; the request gives {_KINDS.get(kind, raw.dtype.name)}"
        )
    if target.kind in "iu" and raw.dtype != target:
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input {name!r} has values outside the range of {datatype}")
    return raw.astype(target, copy=False)


def _bytes_array(name: str, values: Any, b64: bool) -> np.ndarray[Any, Any]:
    if isinstance(values, list | tuple):
        try:
            raw = np.array(values, dtype=object)
        except ValueError as exc:
            raise InvalidInput(f"input {name!r}: rows have different lengths ({exc})") from exc
    else:
        raw = np.empty((), dtype=object)
        raw[()] = values
    out = np.empty(raw.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(raw.reshape(-1)):
        flat[i] = _one_bytes(name, value, b64)
    return out


def _one_bytes(name: str, value: Any, b64: bool) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if b64 and isinstance(value, dict) and list(value) == ["b64"]:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise InvalidInput(f"input {name!r}: 'b64' is not valid base64") from exc
    if isinstance(value, list):
        raise InvalidInput(f"input {name!r}: rows have different lengths")
    shown = "a {'b64': ...} object or " if b64 else ""
    raise InvalidInput(
        f"input {name!r} is BYTES: each value must be {shown}a string, got {type(value).__name__}"
    )


def jsonable(tensor: Tensor, *, b64: bool = True) -> Any:
    """A tensor's data for orjson: numpy arrays as they are, BYTES as text (or b64 objects)."""
    if tensor.datatype == "BYTES":
        return _texts(tensor.data, b64)
    if tensor.datatype == "FP16":
        return tensor.data.astype(np.float32)
    return np.ascontiguousarray(tensor.data)


def records(tensors: Iterable[Tensor], *, b64: bool = True) -> list[dict[str, Any]]:
    """One object per row, keyed by output name (a DataFrame's ``records`` orientation)."""
    named = [
        (t.name, _texts(t.data, b64) if t.datatype == "BYTES" else t.data.tolist()) for t in tensors
    ]
    lengths = {name: len(values) if isinstance(values, list) else 1 for name, values in named}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise BadRequest(f"the outputs have different numbers of rows ({sizes}); ask for columns")
    names = [name for name, _ in named]
    return [dict(zip(names, row, strict=True)) for row in zip(*(v for _, v in named), strict=True)]


def _texts(data: np.ndarray[Any, Any], b64: bool) -> Any:
    def text(value: Any) -> Any:
        if not isinstance(value, bytes):
            return str(value)
        try:
            return value.decode()
        except UnicodeDecodeError:
            if not b64:
                raise BadRequest("an output holds bytes that are not UTF-8 text") from None
            return {"b64": base64.b64encode(value).decode()}

    flat = [text(v) for v in data.reshape(-1)]
    if data.ndim == 0:
        return flat[0]
    return np.array(flat, dtype=object).reshape(data.shape).tolist() if data.ndim > 1 else flat
