"""V2 gRPC messages ↔ inferline types, for ``v2_grpc.py`` only.

Tensors arrive either typed (``InferInputTensor.contents.<field>``, the field
named by ``DATATYPES[dt].contents_field``) or raw (``raw_input_contents``, one
little-endian buffer per input, in order; a BYTES element is a 4-byte
little-endian length and then its bytes, as in Triton, coded by
``inferline.codecs`` for REST and gRPC alike). Element counts come
from the declared shape and are checked against the limits *before* any array
is built, so a small message cannot make the server allocate a huge one.

Typed inputs are read with one ``np.asarray`` over the repeated field (12 µs for
100k FP32, against 2.5 ms for ``np.fromiter``). Numeric outputs go into typed
fields with ``extend(array.ravel().tolist())``: measured against
``extend(array)`` it is 2x (INT64) to 16x (BOOL) faster.

``decode_infer`` and ``encode_infer`` work on the wire bytes of ``ModelInfer``:
the common shape (raw contents, no parameters) goes through the hand-written
reader and writer in ``_grpc_wire.py``, everything else through the protobuf
runtime and the message converters below. Both share the per-tensor checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from google.protobuf.message import DecodeError

from inferline.codecs import MAX_DIMS, check_span, decode_bytes_raw, encode_bytes_raw
from inferline.errors import InvalidInput
from inferline.protocols._generated import inference_pb2 as pb
from inferline.transport import grpc_wire as _grpc_wire
from inferline.types import (
    DATATYPES,
    Datatype,
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
)

__all__ = [
    "decode_infer",
    "decode_request",
    "encode_infer",
    "encode_response",
    "from_parameters",
    "to_parameters",
]

_ParameterMap = Mapping[str, pb.InferParameter]
#: Little-endian dtype per datatype, for raw contents.
_WIRE_DTYPES = {name: row.dtype.newbyteorder("<") for name, row in DATATYPES.items()}


class DecodedInfer(NamedTuple):
    """What ``ModelInfer`` needs from a request: the target, the tensors, the form used."""

    model_name: str
    model_version: str
    request: InferRequest
    #: The client sent raw contents (and so gets a raw answer, as Triton does).
    raw: bool


def decode_infer(
    data: bytes,
    *,
    max_tensors: int,
    max_elements: int,
    check_model: Callable[[str, str], object] | None = None,
) -> DecodedInfer:
    """A serialized ``ModelInferRequest`` as tensors; anything malformed is InvalidInput.

    ``check_model(name, version)`` runs as soon as the message names its model,
    before any tensor is read: an unknown model is NOT_FOUND whatever the tensors.
    """
    wire = _grpc_wire.parse_request(data)
    # Raw contents, one per input and within the limit: the common shape, read by hand.
    if wire is not None and 0 < len(wire.inputs) == len(wire.raw_input_contents) <= max_tensors:
        if check_model is not None:
            check_model(wire.model_name, wire.model_version)
        return _from_wire(wire, max_elements)
    # Typed contents, parameters, or something to refuse: the protobuf runtime decides.
    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        # "Error parsing message with type '...': <reason>": keep the reason.
        reason = str(exc).rpartition(": ")[2] or "cannot parse it"
        raise InvalidInput(f"request is not a valid inference.ModelInferRequest: {reason}") from exc
    if check_model is not None:
        check_model(message.model_name, message.model_version)
    request = decode_request(message, max_tensors=max_tensors, max_elements=max_elements)
    return DecodedInfer(
        message.model_name, message.model_version, request, bool(message.raw_input_contents)
    )


def _from_wire(wire: _grpc_wire.WireRequest, max_elements: int) -> DecodedInfer:
    tensors = []
    for (name, datatype, shape), buffer in zip(wire.inputs, wire.raw_input_contents, strict=True):
        row = _datatype(name, datatype)
        count = _element_count(name, shape, max_elements)
        tensors.append(Tensor(name, row.name, shape, _from_raw(name, row, shape, count, buffer)))
    outputs = [RequestedOutput(name) for name in wire.outputs] or None
    request = InferRequest(inputs=tensors, id=wire.id or None, outputs=outputs)
    return DecodedInfer(wire.model_name, wire.model_version, request, True)


def encode_infer(response: InferResponse, *, raw: bool) -> bytes:
    """The serialized ``ModelInferResponse``: raw if asked or if an output has no typed field."""
    outputs = response.outputs
    raw = raw or any(not DATATYPES[t.datatype].contents_field for t in outputs)
    if raw and not response.parameters and not any(t.parameters for t in outputs):
        return _grpc_wire.encode_response(
            response.model_name,
            response.model_version,
            response.id or "",
            [
                (t.name, t.datatype, t.shape, _to_raw(DATATYPES[t.datatype], t.data))
                for t in outputs
            ],
        )
    return encode_response(response, raw=raw).SerializeToString()


def decode_request(
    message: pb.ModelInferRequest, *, max_tensors: int, max_elements: int
) -> InferRequest:
    """The request as numpy tensors; any malformed part is an :class:`InvalidInput`."""
    inputs = message.inputs
    if len(inputs) > max_tensors:
        raise InvalidInput(f"request has {len(inputs)} input tensors; the limit is {max_tensors}")
    raw = message.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; "
            "send one per input, in the order of 'inputs'"
        )
    tensors = []
    for index, tensor in enumerate(inputs):
        row = _datatype(tensor.name, tensor.datatype)
        shape = list(tensor.shape)
        count = _element_count(tensor.name, shape, max_elements)
        has_contents = tensor.HasField("contents") and bool(tensor.contents.ListFields())
        if raw:
            if has_contents:
                raise InvalidInput(
                    f"input {tensor.name!r} has typed contents but the request uses "
                    "raw_input_contents; send all inputs one way"
                )
            data = _from_raw(tensor.name, row, shape, count, raw[index])
        else:
            data = _from_contents(tensor.name, row, shape, count, tensor.contents)
        tensors.append(
            Tensor(tensor.name, row.name, shape, data, from_parameters(tensor.parameters))
        )
    outputs = [RequestedOutput(o.name, from_parameters(o.parameters)) for o in message.outputs]
    return InferRequest(
        inputs=tensors,
        id=message.id or None,
        parameters=from_parameters(message.parameters),
        outputs=outputs or None,
    )


def _datatype(name: str, datatype: str) -> Datatype:
    row = DATATYPES.get(datatype)
    if row is None:
        raise InvalidInput(
            f"input {name!r} has unknown datatype {datatype!r}; expected one of "
            f"{', '.join(DATATYPES)}"
        )
    return row


def _element_count(name: str, shape: Sequence[int], max_elements: int) -> int:
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r} has shape {list(shape)}; dimensions must be >= 0")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r} has {len(shape)} dimensions; the limit is {MAX_DIMS}")
    count = math.prod(shape)
    if count > max_elements:
        raise InvalidInput(f"input {name!r} has {count} elements; the limit is {max_elements}")
    check_span(name, list(shape), max_elements)
    return count


def _from_raw(name: str, row: Datatype, shape: list[int], count: int, buffer: bytes) -> Any:
    if row.name == "BYTES":
        return decode_bytes_raw(name, buffer, count).reshape(shape)
    expected = count * row.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {name!r} ({row.name}, shape {shape}) needs {expected} bytes of "
            f"raw_input_contents; got {len(buffer)}"
        )
    # Zero-copy view over the message's bytes (read-only).
    return np.frombuffer(buffer, dtype=_WIRE_DTYPES[row.name]).reshape(shape)


def _from_contents(
    name: str, row: Datatype, shape: list[int], count: int, contents: pb.InferTensorContents
) -> Any:
    if not row.contents_field:
        raise InvalidInput(f"input {name!r}: {row.name} data must be sent in raw_input_contents")
    values = getattr(contents, row.contents_field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} ({row.name}, shape {shape}) needs {count} values in "
            f"contents.{row.contents_field}; got {len(values)}"
        )
    if row.name == "BYTES":
        items = np.empty(count, dtype=np.object_)
        items[:] = list(values)
        return items.reshape(shape)
    # np.asarray reads the repeated field in bulk, typed as its protobuf field.
    wire = np.asarray(values)
    if wire.dtype == row.dtype:
        return wire.reshape(shape)
    data = wire.astype(row.dtype)
    if count and (data != wire).any():
        # INT8/INT16/UINT8/UINT16 travel in 32-bit fields: refuse values that do not fit.
        bad = int(np.flatnonzero(data != wire)[0])
        raise InvalidInput(
            f"input {name!r} element {bad} is {wire.reshape(-1)[bad]}, out of range for {row.name}"
        )
    return data.reshape(shape)


def encode_response(response: InferResponse, *, raw: bool) -> pb.ModelInferResponse:
    """The response message; typed contents unless ``raw`` (or an output has no typed field)."""
    outputs = response.outputs
    # A response is all raw or all typed, and FP16 has no typed field.
    raw = raw or any(not DATATYPES[t.datatype].contents_field for t in outputs)
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    to_parameters(response.parameters, message.parameters)
    for tensor in outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        to_parameters(tensor.parameters, out.parameters)
        row = DATATYPES[tensor.datatype]
        if raw:
            message.raw_output_contents.append(_to_raw(row, tensor.data))
        elif row.name == "BYTES":
            out.contents.bytes_contents.extend(_as_bytes(v) for v in tensor.data.ravel())
        else:
            getattr(out.contents, row.contents_field).extend(tensor.data.ravel().tolist())
    return message


def _to_raw(row: Datatype, data: Any) -> bytes:
    if row.name == "BYTES":
        return encode_bytes_raw(data)
    return np.ascontiguousarray(data, dtype=_WIRE_DTYPES[row.name]).tobytes()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()


def from_parameters(parameters: _ParameterMap) -> dict[str, Any]:
    """Protobuf parameters as plain Python values (unset ones as None)."""
    result: dict[str, Any] = {}
    for key, value in parameters.items():
        which = value.WhichOneof("parameter_choice")
        result[key] = None if which is None else getattr(value, which)
    return result


def to_parameters(values: Mapping[str, Any], target: Any) -> None:
    """Fill a protobuf parameter map from Python values (bool, int, float, str)."""
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool | np.bool_):
            param.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            number = int(value)
            if number >= 2**63:
                param.uint64_param = number
            else:
                param.int64_param = number
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        else:
            param.string_param = value if isinstance(value, str) else str(value)
