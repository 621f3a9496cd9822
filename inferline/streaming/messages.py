"""Messages in, results out: parsing per the model's signature and encoding results.

A message carries the model's named inputs, as

* the fields of a Redis Streams entry, each value parsed per the input's datatype
  (a JSON number or list; a BYTES input also takes the raw text);
* one field (``--payload-field``) holding a JSON object of named inputs or a V2
  request (``{"inputs": [{"name", "shape", "datatype", "data"}]}``);
* a JSON document (Kafka, NATS): a JSON object of named inputs or a V2 request.

An input given without its batch dimension (one row) is scored as one row and
its outputs lose the batch dimension again. A result carries ``id``, ``model``,
``version``, ``variant`` (when the server routed to one) and each output by name,
JSON-encoded. Anything that cannot be parsed raises :class:`BadRequest`, whose
message goes to the dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from inferline.codecs import decode_request, json_object
from inferline.errors import BadRequest, InvalidInput
from inferline.settings import TensorSpec
from inferline.types import DATATYPES

__all__ = [
    "Delivery",
    "Parsed",
    "Scored",
    "encode_result",
    "parse_document",
    "parse_fields",
    "result_document",
    "split_outputs",
]

Array = np.ndarray[Any, Any]
_JSON = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class Delivery:
    """One message as the broker handed it over."""

    #: The broker's handle for acknowledging it (Redis entry id, NATS msg, Kafka msg).
    ref: Any
    #: Redis entry fields, or the raw JSON document (Kafka, NATS).
    payload: Mapping[str, str] | bytes
    #: How many times the broker has delivered it (1 the first time).
    attempts: int = 1
    #: The broker's id as text (for the result's id when the message has none).
    broker_id: str = ""
    #: When it was produced (epoch seconds), for end-to-end latency; None: unknown.
    produced: float | None = None


@dataclass(slots=True)
class Parsed:
    """A message's id and its inputs as arrays with a batch dimension."""

    id: str
    inputs: dict[str, Array]
    #: Rows in this message (the batch dimension of every input).
    rows: int
    #: The message sent one row without the batch dimension: strip it from outputs.
    single: bool


@dataclass(slots=True)
class Scored:
    """A message's outputs and who answered."""

    outputs: dict[str, Array]
    version: str
    variant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_fields(
    fields: Mapping[str, str],
    specs: Sequence[TensorSpec] | None,
    *,
    id_field: str,
    payload_field: str | None,
    fallback_id: str,
    max_elements: int,
) -> Parsed:
    """A Redis Streams entry: its own fields, or the JSON in ``payload_field``."""
    if payload_field is not None:
        raw = fields.get(payload_field)
        if raw is None:
            raise BadRequest(f"the message has no {payload_field!r} field")
        parsed = parse_document(
            raw, specs, id_field=id_field, fallback_id=fallback_id, max_elements=max_elements
        )
        if id_field in fields and parsed.id == fallback_id:
            parsed.id = fields[id_field]
        return parsed
    message_id = fields.get(id_field, fallback_id)
    if specs is None:
        raise BadRequest("entry fields need the model's signature; use --payload-field")
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in fields:
            raise BadRequest(f"the message has no field for input {spec.name!r}")
        values[spec.name] = _field_value(spec, fields[spec.name])
    return _rows(message_id, values, specs, max_elements)


def parse_document(
    raw: bytes | str,
    specs: Sequence[TensorSpec] | None,
    *,
    id_field: str,
    fallback_id: str,
    max_elements: int,
) -> Parsed:
    """A JSON object of named inputs, or a V2 request."""
    doc = json_object(raw, "the message")
    message_id = doc.get(id_field, fallback_id)
    if not isinstance(message_id, str | int) or isinstance(message_id, bool):
        raise BadRequest(f"{id_field!r} must be a string or an integer")
    if isinstance(doc.get("inputs"), list):
        body = raw.encode() if isinstance(raw, str) else raw
        request = decode_request(body, max_tensors=256, max_elements=max_elements)
        values = {t.name: t.data for t in request.inputs}
        if request.id is not None and id_field not in doc:
            message_id = request.id
        # A V2 request states its shapes: the batch dimension is always there.
        return _rows(str(message_id), values, specs, max_elements, batched=True)
    if specs is None:
        values = {k: v for k, v in doc.items() if k != id_field}
    else:
        missing = [s.name for s in specs if s.name not in doc]
        if missing:
            raise BadRequest(f"the message has no input {missing[0]!r}")
        values = {s.name: doc[s.name] for s in specs}
    return _rows(str(message_id), values, specs, max_elements)


def _field_value(spec: TensorSpec, text: str) -> Any:
    if spec.datatype == "BYTES":
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                return text
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"input {spec.name!r}: {text[:40]!r} is not a number or list") from exc


def _rows(
    message_id: str,
    values: Mapping[str, Any],
    specs: Sequence[TensorSpec] | None,
    max_elements: int,
    *,
    batched: bool = False,
) -> Parsed:
    by_name = {s.name: s for s in specs} if specs is not None else {}
    arrays: dict[str, Array] = {}
    single: bool | None = None
    for name, value in values.items():
        spec = by_name.get(name)
        array = _array(name, value, spec, max_elements)
        declared = len(spec.shape) if spec is not None and spec.shape else None
        one = not batched and (
            array.ndim == 0 or (declared is not None and array.ndim == declared - 1)
        )
        if one:
            array = array.reshape(1, *array.shape) if array.ndim else array.reshape(1)
        if single is not None and one != single:
            raise InvalidInput(f"input {name!r}: some inputs are one row, others a batch")
        single = one
        arrays[name] = array
    if not arrays:
        raise BadRequest("the message has no inputs")
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1:
        raise InvalidInput(f"inputs have different row counts: {sorted(counts)}")
    rows = counts.pop()
    if rows == 0:
        raise InvalidInput("the message has no rows")
    return Parsed(message_id, arrays, rows, bool(single))


def _array(name: str, value: Any, spec: TensorSpec | None, max_elements: int) -> Array:
    if isinstance(value, np.ndarray):
        array = value
    else:
        dtype = DATATYPES[spec.datatype].dtype if spec is not None else None
        try:
            if dtype is not None and dtype.kind == "O":
                array = np.asarray(_as_bytes(value), dtype=object)
            else:
                array = np.asarray(value, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"input {name!r}: {exc}") from exc
        if array.dtype.kind == "O" and (spec is None or spec.datatype != "BYTES"):
            raise InvalidInput(f"input {name!r} is ragged or not numeric")
    if array.size > max_elements:
        raise InvalidInput(f"input {name!r} has {array.size} elements; the limit is {max_elements}")
    return array


def _as_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    return value


def split_outputs(outputs: Mapping[str, Array], parsed: Sequence[Parsed]) -> list[dict[str, Array]]:
    """Cut a merged batch's outputs back into each message's rows."""
    total = sum(p.rows for p in parsed)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InvalidInput(
                f"output {name!r} has shape {list(array.shape)}; {total} rows were sent"
            )
    pieces: list[dict[str, Array]] = []
    start = 0
    for item in parsed:
        end = start + item.rows
        pieces.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return pieces


def encode_result(model: str, parsed: Parsed, scored: Scored) -> dict[str, str]:
    """The result's fields: id, model, version, variant, then each output as JSON."""
    fields = {"id": parsed.id, "model": model, "version": scored.version}
    if scored.variant is not None:
        fields["variant"] = scored.variant
    for name, array in scored.outputs.items():
        if name in fields:
            name = f"output.{name}"
        data = array[0] if parsed.single else array
        fields[name] = _json(data)
    return fields


def result_document(fields: Mapping[str, str]) -> bytes:
    """A result (or dead letter) as one JSON object, its JSON-encoded fields as values."""
    doc: dict[str, Any] = {}
    for name, text in fields.items():
        if name in ("id", "model", "version", "variant", "attempts", "source_id", "payload"):
            doc[name] = text
        else:
            doc[name] = orjson.loads(text)
    return orjson.dumps(doc)


def _json(data: Any) -> str:
    if isinstance(data, np.ndarray):
        if data.dtype.kind in "OSU":
            data = _texts(data.tolist())
        elif data.ndim == 0:
            data = data.item()
        elif data.dtype == np.float16:
            data = data.astype(np.float32)
        else:
            data = np.ascontiguousarray(data)
    elif isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, bytes):
        data = data.decode(errors="replace")
    return orjson.dumps(data, option=_JSON).decode()


def _texts(value: Any) -> Any:
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value
