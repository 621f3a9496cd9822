"""V2 (Open Inference Protocol) tensors and the one datatype table.

Requests are decoded once into numpy arrays and stay numpy arrays through
validation, batching and the runtime: there is no per-request pydantic model on
the hot path. ``DATATYPES`` is the only table mapping V2 datatype names to numpy
dtypes, struct chars and protobuf ``InferTensorContents`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DATATYPES",
    "Datatype",
    "InferRequest",
    "InferResponse",
    "Parameters",
    "RequestedOutput",
    "Tensor",
    "datatype_of",
]

Parameters = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Datatype:
    """One row of the V2 datatype table."""

    name: str
    dtype: np.dtype[Any]
    struct_char: str
    #: Field of ``InferTensorContents`` that carries this type in gRPC.
    contents_field: str
    #: Bytes per element; 0 for variable-length BYTES.
    itemsize: int


def _row(name: str, dtype: Any, char: str, contents: str) -> Datatype:
    np_dtype = np.dtype(dtype)
    size = 0 if name == "BYTES" else np_dtype.itemsize
    return Datatype(name, np_dtype, char, contents, size)


DATATYPES: Mapping[str, Datatype] = {
    row.name: row
    for row in (
        _row("BOOL", np.bool_, "?", "bool_contents"),
        _row("UINT8", np.uint8, "B", "uint_contents"),
        _row("UINT16", np.uint16, "H", "uint_contents"),
        _row("UINT32", np.uint32, "I", "uint_contents"),
        _row("UINT64", np.uint64, "Q", "uint64_contents"),
        _row("INT8", np.int8, "b", "int_contents"),
        _row("INT16", np.int16, "h", "int_contents"),
        _row("INT32", np.int32, "i", "int_contents"),
        _row("INT64", np.int64, "q", "int64_contents"),
        _row("FP16", np.float16, "e", ""),  # gRPC: raw contents only, as in Triton
        _row("FP32", np.float32, "f", "fp32_contents"),
        _row("FP64", np.float64, "d", "fp64_contents"),
        _row("BYTES", np.object_, "", "bytes_contents"),
    )
}

_BY_DTYPE: Mapping[np.dtype[Any], str] = {
    row.dtype: row.name for row in DATATYPES.values() if row.name != "BYTES"
}


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """V2 datatype name for a numpy array (strings and objects are BYTES)."""
    name = _BY_DTYPE.get(array.dtype)
    if name is not None:
        return name
    if array.dtype.kind in "OUS":
        return "BYTES"
    raise TypeError(f"numpy dtype {array.dtype} has no V2 datatype")


@dataclass(slots=True)
class Tensor:
    """A named tensor: V2 metadata plus its data as one numpy array."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: None means "every output the model has".
    outputs: list[RequestedOutput] | None = None


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: The prediction cache's answer: "hit", "miss", or None when no cache was asked.
    cache: str | None = None
