"""The hand-written ModelInfer wire codec against the protobuf runtime, its one authority.

Every request the fast reader accepts must mean exactly what ``FromString``
makes of it, and anything it does not handle (or that is malformed) must be
left to the runtime; every response it writes must be the bytes
``SerializeToString`` writes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from inferline.errors import InvalidInput
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._grpc_codec import (
    decode_infer,
    decode_request,
    encode_infer,
    encode_response,
)
from inferline.transport import grpc_wire as _grpc_wire
from inferline.types import InferRequest, InferResponse, Tensor
from tests.protocols.test_v2_grpc import load_payload, to_pb

LIMITS = {"max_tensors": 256, "max_elements": 1 << 24}


def kitchen_raw() -> pb.ModelInferRequest:
    request = to_pb(load_payload("infer_kitchen.json"), "kitchen", raw=True)
    request.ClearField("parameters")  # parameters are left to the runtime
    request.model_version = "1"
    request.outputs.add(name="text_upper")
    request.outputs.add(name="fp_sum")
    return request


def demo_raw(rows: int = 3) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="demo", id="r-1")
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 20])
    request.raw_input_contents.append(np.arange(rows * 20, dtype="<f4").tobytes())
    return request


def as_tuple(message: pb.ModelInferRequest) -> tuple[Any, ...]:
    """What the reader returns, computed from the runtime's view of the message."""
    return (
        message.model_name,
        message.model_version,
        message.id,
        [(t.name, t.datatype, list(t.shape)) for t in message.inputs],
        [o.name for o in message.outputs],
        list(message.raw_input_contents),
    )


def same_request(a: InferRequest, b: InferRequest) -> None:
    assert (a.id, a.parameters) == (b.id, b.parameters)
    assert [(o.name, o.parameters) for o in a.outputs or ()] == [
        (o.name, o.parameters) for o in b.outputs or ()
    ]
    assert len(a.inputs) == len(b.inputs)
    for x, y in zip(a.inputs, b.inputs, strict=True):
        assert (x.name, x.datatype, x.shape, x.parameters) == (
            y.name,
            y.datatype,
            y.shape,
            y.parameters,
        )
        assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape
        assert x.data.tolist() == y.data.tolist()


# -- reading --------------------------------------------------------------------------
@pytest.mark.parametrize("message", [kitchen_raw(), demo_raw(), demo_raw(0)], ids=str)
def test_reader_agrees_with_the_runtime(message: pb.ModelInferRequest) -> None:
    data = message.SerializeToString()
    wire = _grpc_wire.parse_request(data)
    assert wire is not None
    assert tuple(wire) == as_tuple(pb.ModelInferRequest.FromString(data))
    fast = decode_infer(data, **LIMITS)
    assert (fast.model_name, fast.model_version, fast.raw) == (
        message.model_name,
        message.model_version,
        True,
    )
    same_request(fast.request, decode_request(message, **LIMITS))


def test_reader_takes_unpacked_shapes_and_negative_dimensions() -> None:
    # Field 3 sent unpacked (one varint each), -1 as a ten-byte varint: both legal.
    tensor = b"\x0a\x01x\x12\x04FP32\x18\x02\x18" + b"\xff" * 9 + b"\x01"
    data = b"\x0a\x01m\x2a" + bytes([len(tensor)]) + tensor + b"\x3a\x00"
    expected = pb.ModelInferRequest.FromString(data)
    assert list(expected.inputs[0].shape) == [2, -1]
    wire = _grpc_wire.parse_request(data)
    assert wire is not None and tuple(wire) == as_tuple(expected)
    with pytest.raises(InvalidInput, match=r"input 'x' has shape \[2, -1\]; dimensions must be"):
        decode_infer(data, **LIMITS)


def typed(request: pb.ModelInferRequest) -> None:
    del request.raw_input_contents[:]
    request.inputs[0].contents.fp32_contents.extend([0.5] * 60)


UNHANDLED = {
    "typed contents": typed,
    "request parameters": lambda r: setattr(r.parameters["priority"], "int64_param", 1),
    "input parameters": lambda r: setattr(r.inputs[0].parameters["a"], "bool_param", True),
    "output parameters": lambda r: r.outputs.add(name="o").parameters["a"].SetInParent(),
}


@pytest.mark.parametrize("change", UNHANDLED.values(), ids=UNHANDLED.keys())
def test_reader_leaves_other_shapes_to_the_runtime(change: Any) -> None:
    request = demo_raw()
    assert _grpc_wire.parse_request(request.SerializeToString()) is not None
    change(request)
    data = request.SerializeToString()
    assert _grpc_wire.parse_request(data) is None
    # The runtime path reads it; a raw request still gets a raw answer.
    decoded = decode_infer(data, **LIMITS)
    assert decoded.model_name == "demo"
    assert decoded.raw == bool(request.raw_input_contents)
    same_request(decoded.request, decode_request(request, **LIMITS))


def test_unknown_fields_are_left_to_the_runtime() -> None:
    data = demo_raw().SerializeToString() + b"\x40\x01"  # field 8, varint
    assert _grpc_wire.parse_request(data) is None
    assert decode_infer(data, **LIMITS).request.id == "r-1"


def test_reader_never_accepts_what_the_runtime_refuses() -> None:
    """Every truncation and many one-byte changes of a valid request."""
    data = kitchen_raw().SerializeToString()
    variants = [data[:cut] for cut in range(len(data))]
    for index in range(len(data)):
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF, data[index] ^ 0x01):
            variants.append(data[:index] + bytes([value]) + data[index + 1 :])
    accepted = 0
    for variant in variants:
        wire = _grpc_wire.parse_request(variant)
        try:
            message = pb.ModelInferRequest.FromString(variant)
        except DecodeError:
            assert wire is None, variant
            continue
        if wire is not None:
            accepted += 1
            assert tuple(wire) == as_tuple(message), variant
    assert accepted > len(data)  # the comparison did run on many accepted variants


def test_malformed_bytes_are_invalid_input() -> None:
    for data, reason in (
        (b"\x0a\x05ab", "Wire format was corrupt"),
        (b"\x0a\x02\xff\xfe", "UTF-8"),
    ):
        with pytest.raises(
            InvalidInput, match=r"request is not a valid inference\.ModelInferRequest"
        ):
            decode_infer(data, **LIMITS)
        with pytest.raises(InvalidInput, match=reason):
            decode_infer(data, **LIMITS)


# -- writing --------------------------------------------------------------------------
RESPONSES = {
    "classifier": InferResponse(
        "forest",
        "1",
        [
            Tensor("label", "INT64", [1], np.array([1])),
            Tensor("probabilities", "FP32", [1, 2], np.array([[0.25, 0.75]], np.float32)),
        ],
    ),
    "every field, long values": InferResponse(
        "m" * 200,
        "12",
        [
            Tensor("text", "BYTES", [2, 1], np.array([[b"a"], [b"bc" * 100]], dtype=object)),
            Tensor("wide", "FP64", [300], np.arange(300, dtype=np.float64)),
            Tensor("half", "FP16", [2], np.array([1.5, -2], np.float16)),
            Tensor("dynamic", "INT32", [-1, 0, 2**40], np.zeros(0, np.int32)),
            Tensor("scalar", "BOOL", [], np.array(True)),
        ],
        id="request-1",
    ),
    "no outputs, no version": InferResponse("m", "", []),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_writer_matches_serialize_to_string(name: str) -> None:
    response = RESPONSES[name]
    expected = encode_response(response, raw=True).SerializeToString()
    assert encode_infer(response, raw=True) == expected
    # Parameters are left to the runtime: the same answer through the other path.
    with_parameters = replace(response, parameters={"n": 1})
    expected = encode_response(with_parameters, raw=True).SerializeToString()
    assert encode_infer(with_parameters, raw=True) == expected
