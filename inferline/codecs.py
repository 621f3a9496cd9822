"""V2 JSON tensors and the binary-tensor extension ↔ numpy.

A request body is decoded once: one ``orjson.loads``, one ``np.asarray`` per
input (or a zero-copy ``np.frombuffer`` for binary data). Responses are encoded
with orjson's native numpy support. BYTES tensors are numpy object arrays of
``bytes``; in JSON they travel as strings.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from inferline.errors import BadRequest, InvalidInput
from inferline.types import DATATYPES, InferRequest, InferResponse, RequestedOutput, Tensor

__all__ = [
    "MAX_DIMS",
    "check_span",
    "checked_shape",
    "decode_bytes_raw",
    "decode_request",
    "encode_bytes_raw",
    "encode_response",
    "json_object",
]

_LENGTH = struct.Struct("<I")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def json_object(raw: bytes | str, what: str = "the body") -> dict[str, Any]:
    """Parse JSON that must be an object; anything else is a 400 saying what was wrong."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON in {what}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a JSON object, not a {type(doc).__name__}")
    return doc


#: Most dimensions a tensor may have (numpy 1.x's limit; 2.x allows 64).
MAX_DIMS = 32


def checked_shape(name: str, shape: Any) -> tuple[list[int], int]:
    """A V2 shape and its element count, refusing anything but a list of naturals."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"input {name!r} has {len(shape)} dimensions; the limit is {MAX_DIMS}")
    return shape, math.prod(shape)


def check_span(name: str, shape: list[int], max_elements: int) -> None:
    """Refuse a shape whose dimensions, zeros aside, multiply past ``max_elements``.

    Why: ``[0, 2**40, 2**40]`` holds no element, so the element count passes any
    limit, yet numpy refuses to shape even an empty array like it (a ValueError,
    which the fuzzer found reaching the client as a 500).
    """
    span = math.prod(d or 1 for d in shape)
    if span > max_elements:
        raise InvalidInput(
            f"input {name!r} has shape {shape}, whose dimensions span {span} elements; "
            f"the limit is {max_elements}"
        )


def decode_request(
    body: bytes,
    json_length: int | None = None,
    *,
    max_tensors: int | None = None,
    max_elements: int | None = None,
) -> InferRequest:
    """Decode a V2 inference request (JSON, optionally followed by binary tensor data).

    The input count and each input's element count (from its declared shape)
    are checked against the limits before any array is built, so a small body
    cannot make the server allocate a huge one (None: no limit).
    """
    if json_length is not None:
        if json_length < 0 or json_length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {json_length} "
                f"but the body has {len(body)} bytes"
            )
        header, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        header, binary = body, memoryview(b"")
    doc = json_object(header)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    if max_tensors is not None and len(raw_inputs) > max_tensors:
        raise InvalidInput(
            f"request has {len(raw_inputs)} input tensors; the limit is {max_tensors}"
        )
    offset = 0
    inputs = []
    for item in raw_inputs:
        tensor, offset = _decode_input(item, binary, offset, max_elements)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"binary data is {len(binary)} bytes "
            f"but the inputs' binary_data_size add up to {offset}"
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    parameters = _parameters(doc, "request")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=_decode_outputs(doc.get("outputs"), parameters),
    )


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = doc.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where} 'parameters' must be a JSON object")
    return parameters


def _decode_input(
    item: Any, binary: memoryview, offset: int, max_elements: int | None
) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise BadRequest("each entry of 'inputs' must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("every input needs a 'name' string")
    datatype = item.get("datatype")
    row = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if row is None:
        raise BadRequest(
            f"input {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    shape, size = checked_shape(name, item.get("shape"))
    if max_elements is not None:
        if size > max_elements:
            raise InvalidInput(f"input {name!r} has {size} elements; the limit is {max_elements}")
        check_span(name, shape, max_elements)
    parameters = _parameters(item, f"input {name!r}")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size < 0:
            raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
        end = offset + binary_size
        if end > len(binary):
            raise BadRequest(
                f"input {name!r}: binary_data_size {binary_size} runs past the end of the body"
            )
        chunk = binary[offset:end]
        if row.name == "BYTES":
            array = decode_bytes_raw(name, chunk, size)
        else:
            if binary_size != size * row.itemsize:
                raise InvalidInput(
                    f"input {name!r}: binary_data_size is {binary_size} bytes; shape {shape} of "
                    f"{row.name} needs {size * row.itemsize}"
                )
            array = np.frombuffer(chunk, dtype=row.dtype.newbyteorder("<"))
        return Tensor(name, row.name, shape, array.reshape(shape), parameters), end
    if "data" not in item:
        raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
    return Tensor(
        name, row.name, shape, _from_json(name, row.name, item["data"], shape, size)
    ), offset


def _from_json(name: str, datatype: str, data: Any, shape: list[int], size: int) -> Any:
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).ravel()
            array = np.empty(flat.size, dtype=object)
            for i, value in enumerate(flat):
                array[i] = _to_bytes(name, value)
        else:
            array = np.asarray(data, dtype=DATATYPES[datatype].dtype)
            if datatype == "BOOL" and not _all_bools(data):
                raise InvalidInput(f"input {name!r}: BOOL data must be true/false values")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype}: {exc}") from exc
    if array.size != size:
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {size} elements but 'data' has {array.size}"
        )
    return array.reshape(shape)


def _all_bools(data: list[Any]) -> bool:
    return all(_all_bools(v) if isinstance(v, list) else isinstance(v, bool) for v in data)


def _to_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {type(value).__name__}")


def _decode_outputs(raw: Any, parameters: dict[str, Any]) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each entry of 'outputs' must be an object with a 'name'")
        outputs.append(RequestedOutput(item["name"], _parameters(item, f"output {item['name']!r}")))
    return outputs


def decode_bytes_raw(name: str, chunk: memoryview | bytes, count: int) -> Any:
    """Triton's raw BYTES layout: each element is a 4-byte little-endian length + bytes.

    Every element takes at least its 4-byte length, so a count the data cannot
    hold is refused before the element array is allocated.
    """
    view = memoryview(chunk)
    if count * _LENGTH.size > len(view):
        raise InvalidInput(
            f"input {name!r}: {count} BYTES elements need at least {count * _LENGTH.size} "
            f"bytes of data (a 4-byte length each); got {len(view)}"
        )
    array = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise InvalidInput(f"input {name!r}: raw BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > len(view):
            raise InvalidInput(f"input {name!r}: raw BYTES element {i} runs past the data")
        array[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != len(view):
        raise InvalidInput(f"input {name!r}: {len(view) - pos} bytes left after {count} elements")
    return array


def encode_bytes_raw(array: Any) -> bytes:
    parts = []
    for value in array.ravel():
        item = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def _binary_outputs(request: InferRequest) -> set[str] | bool:
    """Which outputs go back as binary data: True for all, else the names asking for it."""
    if request.parameters.get("binary_data_output") is True:
        return True
    return {o.name for o in request.outputs or () if o.parameters.get("binary_data") is True}


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response; the int is the JSON header length when binary data follows."""
    binary_names = _binary_outputs(request)
    chunks: list[bytes] = []
    outputs = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary_names is True or (binary_names and tensor.name in binary_names):
            raw = _raw_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    header = orjson.dumps(doc, option=_JSON_OPTS)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _raw_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return encode_bytes_raw(tensor.data)
    return np.ascontiguousarray(
        tensor.data, dtype=DATATYPES[tensor.datatype].dtype.newbyteorder("<")
    ).tobytes()


def _json_data(tensor: Tensor) -> Any:
    data = tensor.data
    if tensor.datatype == "BYTES":
        return [_to_text(tensor.name, v) for v in data.ravel()]
    if tensor.datatype == "FP16":
        return data.astype(np.float32).ravel()
    return np.ascontiguousarray(data).ravel()


def _to_text(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"output {name!r} holds bytes that are not UTF-8; ask for it with binary_data"
            ) from exc
    return str(value)
