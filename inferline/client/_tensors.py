"""What the client sends and gets back: numpy arrays ↔ V2 tensors, the result type.

Numeric tensors travel as raw little-endian bytes (REST's binary-tensor extension,
gRPC's ``raw_*_contents``); BYTES elements in Triton's raw layout (a 4-byte
little-endian length, then the bytes), coded by :mod:`inferline.codecs` as the
server does. BYTES outputs come back as numpy object arrays of ``bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from inferline.codecs import decode_bytes_raw, encode_bytes_raw
from inferline.errors import InternalError, InvalidInput
from inferline.types import DATATYPES, datatype_of

__all__ = ["InferResult", "Input", "Transport", "from_raw", "prepare", "to_raw"]

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Input:
    """One input ready to send: V2 name, datatype and shape, and its array."""

    name: str
    datatype: str
    shape: list[int]
    array: Array


@dataclass(slots=True)
class InferResult:
    """A server's answer: outputs by name as numpy arrays, and who answered."""

    outputs: dict[str, Array]
    model_name: str
    model_version: str
    request_id: str | None = None
    #: The traffic variant that answered, when the server names one (else None).
    variant: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: The endpoint URL that answered.
    endpoint: str = ""


class Transport(Protocol):
    """One endpoint over one wire protocol; the client balances and retries over these."""

    url: str

    async def infer(
        self,
        model: str,
        version: str | None,
        inputs: list[Input],
        parameters: Mapping[str, Any] | None,
        request_id: str | None,
        outputs: list[str] | None,
        budget: float,
    ) -> InferResult: ...

    async def ready(self, model: str, version: str | None, budget: float) -> bool: ...

    async def metadata(self, model: str, version: str | None, budget: float) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def prepare(inputs: Mapping[str, Any]) -> list[Input]:
    """Each named input as an array with its V2 datatype; strings become UTF-8 bytes."""
    if not inputs:
        raise InvalidInput("infer needs at least one input")
    prepared = []
    for name, value in inputs.items():
        array = np.asarray(value)
        try:
            datatype = datatype_of(array)
        except TypeError as exc:
            raise InvalidInput(f"input {name!r}: {exc}") from exc
        if datatype == "BYTES":
            array = _as_bytes(name, array)
        prepared.append(Input(name, datatype, list(array.shape), array))
    return prepared


def _as_bytes(name: str, array: Array) -> Array:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(array.reshape(-1)):
        if isinstance(value, str):
            flat[i] = value.encode()
        elif isinstance(value, bytes):
            flat[i] = value
        else:
            raise InvalidInput(f"input {name!r}: BYTES elements must be str or bytes")
    return out


def to_raw(item: Input) -> bytes:
    """The raw little-endian bytes of an input."""
    if item.datatype == "BYTES":
        return encode_bytes_raw(item.array)
    wire = DATATYPES[item.datatype].dtype.newbyteorder("<")
    return np.ascontiguousarray(item.array, dtype=wire).tobytes()


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> Array:
    """An output array from its raw bytes, checked against its datatype and shape."""
    row = DATATYPES.get(datatype)
    count = int(np.prod(shape)) if shape else 1
    if row is None:
        raise InternalError(f"output {name!r}: the server sent unknown datatype {datatype!r}")
    if row.name == "BYTES":
        return np.asarray(decode_bytes_raw(name, raw, count)).reshape(shape)
    if len(raw) != count * row.itemsize:
        raise InternalError(
            f"output {name!r}: {len(raw)} bytes do not hold shape {shape} of {datatype}"
        )
    array = np.frombuffer(raw, dtype=row.dtype.newbyteorder("<")).reshape(shape)
    return array.astype(row.dtype, copy=False)


def from_list(name: str, datatype: str, shape: list[int], data: Any) -> Array:
    """An output array from JSON data (REST) or typed contents (gRPC)."""
    row = DATATYPES.get(datatype)
    if row is None:
        raise InternalError(f"output {name!r}: the server sent unknown datatype {datatype!r}")
    if row.name == "BYTES":
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in data]
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.asarray(data, dtype=row.dtype)
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise InternalError(f"output {name!r}: data does not fit shape {shape}") from exc
