"""V2 JSON and binary codecs: round trips for every datatype, and refusals."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferline.codecs import decode_bytes_raw, decode_request, encode_bytes_raw, encode_response
from inferline.errors import BadRequest, InferlineError, InvalidInput
from inferline.types import DATATYPES, InferResponse, Tensor, datatype_of

NUMERIC = [name for name in DATATYPES if name not in ("BYTES",)]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_binary_round_trip_every_numeric_datatype(datatype: str) -> None:
    dtype = DATATYPES[datatype].dtype
    array = (np.arange(12) % 2 == 0) if datatype == "BOOL" else np.arange(12).astype(dtype)
    array = array.reshape(3, 4)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": [3, 4],
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ]
        }
    ).encode()
    request = decode_request(header + array.tobytes(), len(header))
    decoded = request.inputs[0].data
    assert decoded.dtype == dtype and decoded.shape == (3, 4)
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_json_round_trip_every_numeric_datatype(datatype: str) -> None:
    dtype = DATATYPES[datatype].dtype
    array = (np.arange(6) % 3 == 0) if datatype == "BOOL" else np.arange(6).astype(dtype)
    doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 3], "data": array.tolist()}]}
    request = decode_request(json.dumps(doc).encode())
    np.testing.assert_array_equal(request.inputs[0].data, array.reshape(2, 3))
    response = InferResponse("m", "1", [Tensor("y", datatype, [2, 3], request.inputs[0].data)])
    body, binary_length = encode_response(response, request)
    assert binary_length is None
    out = json.loads(body)["outputs"][0]
    assert out["datatype"] == datatype and out["shape"] == [2, 3]
    np.testing.assert_array_equal(np.array(out["data"], dtype=dtype), array)


@given(st.lists(st.binary(max_size=40), min_size=0, max_size=30))
@settings(max_examples=60, deadline=None)
def test_raw_bytes_round_trip(values: list[bytes]) -> None:
    array = np.array(values, dtype=object) if values else np.empty(0, dtype=object)
    raw = encode_bytes_raw(array)
    assert list(decode_bytes_raw("x", raw, len(values))) == values


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
@settings(max_examples=60, deadline=None)
def test_float32_binary_output_is_exact(array: np.ndarray) -> None:
    request = decode_request(
        json.dumps(
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
    )
    response = InferResponse("m", "1", [Tensor("y", datatype_of(array), list(array.shape), array)])
    body, length = encode_response(response, request)
    assert length is not None
    got = np.frombuffer(body[length:], dtype=np.float32).reshape(array.shape)
    np.testing.assert_array_equal(got, array)


def test_raw_bytes_refuses_truncation() -> None:
    raw = struct.pack("<I", 10) + b"abc"
    with pytest.raises(InvalidInput, match="element 0 runs past the data"):
        decode_bytes_raw("x", raw, 1)
    with pytest.raises(InvalidInput, match="ends after 1 of 2 elements"):
        decode_bytes_raw("x", struct.pack("<I", 1) + b"abcd", 2)
    with pytest.raises(InvalidInput, match="2 BYTES elements need at least 8 bytes"):
        decode_bytes_raw("x", struct.pack("<I", 1) + b"a", 2)


def test_non_utf8_bytes_output_asks_for_binary() -> None:
    request = decode_request(
        b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}'
    )
    response = InferResponse(
        "m", "1", [Tensor("y", "BYTES", [1], np.array([b"\xff"], dtype=object))]
    )
    with pytest.raises(BadRequest, match="not UTF-8; ask for it with binary_data"):
        encode_response(response, request)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, "needs a 'name'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]},
            "'shape' must be",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [True], "data": [1]}]},
            "'shape' must be",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]},
            "does not fit datatype UINT8",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]},
            "does not fit",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [5]}]},
            "BYTES data must be strings",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "id": 5},
            "'id' must be a string",
        ),
        (
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                "outputs": {},
            },
            "'outputs' must be a list",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": []}
                ]
            },
            "must be a JSON object",
        ),
    ],
)
def test_malformed_requests(doc: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode_request(json.dumps(doc).encode())


def test_binary_sizes_must_add_up() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "INT32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    with pytest.raises(BadRequest, match="binary data is 12 bytes"):
        decode_request(header + b"\0" * 12, len(header))
    with pytest.raises(BadRequest, match="runs past the end"):
        decode_request(header + b"\0" * 4, len(header))


# -- sizes are checked before anything is allocated -----------------------------------
def _peak_bytes(fn: object) -> tuple[BaseException | None, int]:
    """(what ``fn()`` raised, peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        fn()  # type: ignore[operator]
    except (BadRequest, MemoryError) as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


def _bytes_header(count: int, size: int = 0) -> bytes:
    tensor = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [count],
        "parameters": {"binary_data_size": size},
    }
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize("count", [2 * 10**8, 10**12])
def test_raw_bytes_count_that_the_data_cannot_hold_allocates_nothing(count: int) -> None:
    """Each element needs a 4-byte length: 0 bytes cannot hold N of them, so no N-array."""
    raised, peak = _peak_bytes(lambda: decode_bytes_raw("text", b"", count))
    assert isinstance(raised, InvalidInput), raised
    assert "need at least" in raised.message
    assert peak < 1 << 20


@pytest.mark.parametrize("count", [2 * 10**8, 10**12])
def test_binary_bytes_shape_over_the_limit_is_refused_before_allocation(count: int) -> None:
    header = _bytes_header(count)
    raised, peak = _peak_bytes(
        lambda: decode_request(header, len(header), max_tensors=8, max_elements=1000)
    )
    assert isinstance(raised, InvalidInput), raised
    assert raised.message == f"input 'text' has {count} elements; the limit is 1000"
    assert peak < 1 << 20


@pytest.mark.parametrize(
    ("shape", "data"),
    [([10**12], [1.0]), ([10**6, 10**6, 10**6], []), ([2**62, 2**62], [1.0, 2.0])],
    ids=["huge", "huge-3d", "beyond-int64"],
)
def test_json_shape_over_the_limit_is_refused_before_data_is_read(
    shape: list[int], data: list[float]
) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": data}]}
    with pytest.raises(InvalidInput, match=r"input 'x' has \d+ elements; the limit is 1000"):
        decode_request(json.dumps(doc).encode(), max_tensors=8, max_elements=1000)


def test_too_many_inputs_are_refused_before_any_is_decoded() -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    doc = {"inputs": [{**tensor, "name": f"x{i}"} for i in range(9)]}
    with pytest.raises(InvalidInput, match="request has 9 input tensors; the limit is 8"):
        decode_request(json.dumps(doc).encode(), max_tensors=8, max_elements=1000)


@pytest.mark.parametrize("shape", [[0, 1 << 40, 1 << 40], [0, 1 << 25], [1] * 33])
def test_an_empty_shape_that_spans_past_the_limit_is_refused(shape: list[int]) -> None:
    """Zero elements pass the element limit, but numpy cannot shape even an empty array
    this wide: the fuzzer found the ValueError reaching a client as a 500."""
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
    with pytest.raises(InferlineError) as refused:
        decode_request(body, max_tensors=8, max_elements=1 << 24)
    assert refused.value.http_status == 400 and "'x'" in refused.value.message


@pytest.mark.parametrize("shape", [[0, 1 << 40, 1 << 40], [0, 1 << 25], [1] * 33])
def test_an_empty_grpc_shape_that_spans_past_the_limit_is_refused(shape: list[int]) -> None:
    from inferline.protocols._generated import inference_pb2 as pb
    from inferline.protocols._grpc_codec import decode_infer

    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=shape)
    for raw in (False, True):
        if raw:
            message.raw_input_contents.append(b"")
        with pytest.raises(InferlineError) as refused:
            decode_infer(message.SerializeToString(), max_tensors=8, max_elements=1 << 24)
        assert refused.value.http_status == 400 and "'x'" in refused.value.message
