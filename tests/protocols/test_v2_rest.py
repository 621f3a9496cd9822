"""V2 REST in process: health, metadata, JSON and binary inference, and every error path."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest

from tests.conftest import kitchen_reference

ROW = [0.1 * i for i in range(20)]


def onnx_reference(model_dir: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(
        str(model_dir / "demo" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": rows}), strict=True))


def demo_request(rows: np.ndarray, **extra: object) -> dict[str, object]:
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": list(rows.shape),
        "data": rows.ravel().tolist(),
    }
    return {"inputs": [tensor], **extra}


async def test_health_and_server_metadata(rest: httpx.AsyncClient) -> None:
    assert (await rest.get("/v2/health/live")).json() == {"live": True}
    ready = await rest.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = (await rest.get("/v2")).json()
    assert meta["name"] == "inferline"
    assert "binary_tensor_data" in meta["extensions"]


async def test_model_metadata_read_from_onnx(rest: httpx.AsyncClient) -> None:
    for path in ("/v2/models/demo", "/v2/models/demo/versions/1"):
        meta = (await rest.get(path)).json()
        assert meta["name"] == "demo"
        assert meta["versions"] == ["1"]
        assert meta["platform"] == "onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 20]}]
        assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
            "label": "INT64",
            "probabilities": "FP32",
        }
    ready = await rest.get("/v2/models/demo/versions/1/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_infer_json_equals_model_in_process(rest: httpx.AsyncClient, model_dir: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(5, 20)).astype(np.float32)
    response = await rest.post(
        "/v2/models/demo/infer",
        json=demo_request(rows, id="req-7"),
        headers={"x-request-id": "trace-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_name"] == "demo" and body["model_version"] == "1"
    assert response.headers["x-request-id"] == "trace-1"
    assert response.headers["inferline-model-version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    expected = onnx_reference(model_dir, rows)
    assert outputs["label"]["shape"] == [5]
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])
    assert outputs["probabilities"]["shape"] == [5, 2]
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"]).reshape(5, 2),
        expected["probabilities"],
        rtol=1e-6,
    )


async def test_nested_data_and_requested_outputs(rest: httpx.AsyncClient, model_dir: Path) -> None:
    rows = np.random.default_rng(2).normal(size=(3, 20)).astype(np.float32)
    request = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 20], "data": rows.tolist()}],
        "outputs": [{"name": "label"}],
    }
    body = (await rest.post("/v2/models/demo/infer", json=request)).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]
    np.testing.assert_array_equal(
        body["outputs"][0]["data"], onnx_reference(model_dir, rows)["label"]
    )


def kitchen_inputs(rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    return {
        "fp": rng.normal(size=(rows, 4)).astype(np.float32),
        "i64": rng.integers(-1000, 1000, size=(rows, 2)),
        "flag": rng.integers(0, 2, size=(rows, 1)).astype(bool),
        "text": np.array([f"word-{i}".encode() for i in range(rows)], dtype=object).reshape(
            rows, 1
        ),
    }


def as_json_tensors(inputs: dict[str, np.ndarray]) -> list[dict[str, object]]:
    datatypes = {"fp": "FP32", "i64": "INT64", "flag": "BOOL", "text": "BYTES"}
    tensors = []
    for name, array in inputs.items():
        data = [v.decode() for v in array.ravel()] if name == "text" else array.ravel().tolist()
        tensors.append(
            {"name": name, "datatype": datatypes[name], "shape": list(array.shape), "data": data}
        )
    return tensors


async def test_infer_every_datatype_family_json(rest: httpx.AsyncClient) -> None:
    inputs = kitchen_inputs()
    response = await rest.post("/v2/models/kitchen/infer", json={"inputs": as_json_tensors(inputs)})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    expected = kitchen_reference(inputs)
    np.testing.assert_allclose(outputs["fp_sum"]["data"], expected["fp_sum"], rtol=1e-6)
    assert outputs["fp_sum"]["datatype"] == "FP32"
    np.testing.assert_array_equal(outputs["i64_double"]["data"], expected["i64_double"].ravel())
    assert outputs["flag_not"]["datatype"] == "BOOL"
    assert outputs["flag_not"]["data"] == expected["flag_not"].ravel().tolist()
    assert outputs["text_upper"]["datatype"] == "BYTES"
    assert outputs["text_upper"]["data"] == [v.decode() for v in expected["text_upper"].ravel()]


def split_binary(response: httpx.Response) -> tuple[dict[str, object], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


async def test_binary_inputs_and_outputs(rest: httpx.AsyncClient) -> None:
    inputs = kitchen_inputs(4)
    tensors, chunks = [], []
    datatypes = {"fp": "FP32", "i64": "INT64", "flag": "BOOL", "text": "BYTES"}
    for name, array in inputs.items():
        if name == "text":
            raw = b"".join(struct.pack("<I", len(v)) + v for v in array.ravel())
        else:
            raw = array.tobytes()
        chunks.append(raw)
        tensors.append(
            {
                "name": name,
                "datatype": datatypes[name],
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    response = await rest.post(
        "/v2/models/kitchen/infer",
        content=header + b"".join(chunks),
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    doc, binary = split_binary(response)
    expected = kitchen_reference(inputs)
    offset = 0
    for output in doc["outputs"]:
        size = output["parameters"]["binary_data_size"]
        chunk, offset = binary[offset : offset + size], offset + size
        want = expected[output["name"]]
        if output["datatype"] == "BYTES":
            got, pos = [], 0
            while pos < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, pos)
                got.append(chunk[pos + 4 : pos + 4 + n])
                pos += 4 + n
            assert got == list(want.ravel())
        else:
            np.testing.assert_array_equal(
                np.frombuffer(chunk, dtype=want.dtype).reshape(want.shape), want
            )
    assert offset == len(binary)


async def test_binary_output_for_one_requested_output(
    rest: httpx.AsyncClient, model_dir: Path
) -> None:
    rows = np.random.default_rng(3).normal(size=(2, 20)).astype(np.float32)
    request = demo_request(
        rows,
        outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
    )
    response = await rest.post("/v2/models/demo/infer", json=request)
    doc, binary = split_binary(response)
    probs = np.frombuffer(binary, dtype=np.float32).reshape(2, 2)
    expected = onnx_reference(model_dir, rows)
    np.testing.assert_allclose(probs, expected["probabilities"], rtol=1e-6)
    assert doc["outputs"][1]["data"] == expected["label"].tolist()


async def test_lossless_datatype_is_converted(rest: httpx.AsyncClient) -> None:
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.5, 2, 0]}]}
    body = (await rest.post("/v2/models/ranged/infer", json=request)).json()
    assert body["outputs"][0]["data"] == [2.5]


def fp32(shape: list[int], data: object, name: str = "input") -> dict[str, object]:
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}


BAD_REQUESTS = [
    pytest.param("/v2/models/demo/infer", b"{not json", 400, "malformed JSON", id="malformed-json"),
    pytest.param("/v2/models/demo/infer", b"[1, 2]", 400, "JSON object", id="not-object"),
    pytest.param(
        "/v2/models/demo/infer", {"inputs": []}, 400, "non-empty 'inputs'", id="no-inputs"
    ),
    pytest.param(
        "/v2/models/demo/infer",
        {"inputs": [{"name": "input", "datatype": "FP99", "shape": [1], "data": [1]}]},
        400,
        "unknown datatype 'FP99'",
        id="bad-datatype",
    ),
    pytest.param(
        "/v2/models/demo/infer", fp32([1, -2], []), 400, "non-negative integers", id="negative-dim"
    ),
    pytest.param(
        "/v2/models/demo/infer",
        fp32([1, 20], [1.0] * 19),
        400,
        "needs 20 elements but 'data' has 19",
        id="count-mismatch",
    ),
    pytest.param(
        "/v2/models/demo/infer",
        fp32([1, 19], [1.0] * 19),
        400,
        "has shape [1, 19]; the model expects [-1, 20]",
        id="wrong-shape",
    ),
    pytest.param(
        "/v2/models/demo/infer", fp32([20], [1.0] * 20), 400, "has shape [20]", id="wrong-rank"
    ),
    pytest.param(
        "/v2/models/demo/infer",
        fp32([1, 20], ["a"] * 20),
        400,
        "does not fit datatype FP32",
        id="strings-as-floats",
    ),
    pytest.param(
        "/v2/models/demo/infer",
        {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 20], "data": [1.0] * 20}]},
        400,
        "has datatype FP64; the model expects FP32",
        id="lossy-datatype",
    ),
    pytest.param(
        "/v2/models/demo/infer",
        fp32([1, 20], [1.0] * 20, name="nope"),
        400,
        "unknown input 'nope'",
        id="unknown-input",
    ),
    pytest.param(
        "/v2/models/kitchen/infer",
        fp32([1, 4], [1.0] * 4, name="fp"),
        400,
        "missing input(s): i64, flag, text",
        id="missing-input",
    ),
    pytest.param(
        "/v2/models/demo/infer",
        {**fp32([1, 20], [1.0] * 20), "outputs": [{"name": "nope"}]},
        400,
        "unknown output 'nope'",
        id="unknown-output",
    ),
    pytest.param(
        "/v2/models/ranged/infer",
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [0, 0, 0, 0.5, 11, 0]}
            ]
        },
        400,
        "feature 1 at index [1, 1] is 11.0, above the allowed maximum 10",
        id="above-range",
    ),
    pytest.param(
        "/v2/models/ranged/infer",
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [-0.5, 0, 0]}]},
        400,
        "below the allowed minimum 0",
        id="below-range",
    ),
    pytest.param(
        "/v2/models/nope/infer",
        fp32([1, 20], [1.0] * 20),
        404,
        "model 'nope' not found",
        id="unknown-model",
    ),
    pytest.param(
        "/v2/models/demo/versions/9/infer",
        fp32([1, 20], [1.0] * 20),
        404,
        "has no version '9'; available: 1",
        id="unknown-version",
    ),
    pytest.param(
        "/v2/models/kitchen/infer",
        {"inputs": [{"name": "flag", "datatype": "BOOL", "shape": [1, 1], "data": [3]}]},
        400,
        "BOOL data must be true/false",
        id="bool-not-bool",
    ),
    pytest.param(
        "/v2/models/demo/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20]}]},
        400,
        "neither 'data' nor binary_data_size",
        id="no-data",
    ),
]


@pytest.mark.parametrize(("path", "payload", "status", "message"), BAD_REQUESTS)
async def test_bad_requests_get_precise_errors(
    rest: httpx.AsyncClient, path: str, payload: object, status: int, message: str
) -> None:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await rest.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert message in body["error"], body["error"]
    assert response.headers["x-request-id"]
    # ...and the server keeps serving.
    ok = await rest.post("/v2/models/demo/infer", json=fp32([1, 20], ROW))
    assert ok.status_code == 200


async def test_oversize_body_is_refused_before_reading(rest: httpx.AsyncClient) -> None:
    big = b"x" * (1024 * 1024 + 1)
    response = await rest.post("/v2/models/demo/infer", content=big)
    assert response.status_code == 413
    assert "over the 1048576-byte limit" in response.json()["error"]

    async def chunked():  # no Content-Length: the limit is enforced while streaming
        for _ in range(200):
            yield b"y" * 8192

    response = await rest.post("/v2/models/demo/infer", content=chunked())
    assert response.status_code == 413


async def test_bad_binary_header_lengths(rest: httpx.AsyncClient) -> None:
    body = json.dumps(fp32([1, 20], ROW)).encode()
    for value, message in (("abc", "is not a number"), (str(len(body) + 5), "but the body has")):
        response = await rest.post(
            "/v2/models/demo/infer",
            content=body,
            headers={"inference-header-content-length": value},
        )
        assert response.status_code == 400
        assert message in response.json()["error"]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 20],
                    "parameters": {"binary_data_size": 40},
                }
            ]
        }
    ).encode()
    response = await rest.post(
        "/v2/models/demo/infer",
        content=header + b"\0" * 40,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 400
    assert (
        "binary_data_size is 40 bytes; shape [1, 20] of FP32 needs 80" in response.json()["error"]
    )


async def test_unknown_route_and_method(rest: httpx.AsyncClient) -> None:
    missing = await rest.get("/v2/nothing/here")
    assert missing.status_code == 404 and "no route" in missing.json()["error"]
    wrong = await rest.get("/v2/models/demo/infer")
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]
    assert (await rest.get("/v2/models/nope/ready")).status_code == 404


@pytest.mark.parametrize("declared", ["\u00b2", "\u0663", "12a", "-1"])
async def test_read_body_refuses_a_length_that_is_not_ascii_digits(declared: str) -> None:
    """``"²".isdigit()`` is True and ``int("²")`` fails: that was a 500, not a 400."""
    from starlette.requests import Request

    from inferline.errors import BadRequest
    from inferline.protocols.v2_rest import read_body

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b""}
    scope["headers"] = [(b"content-length", declared.encode())]
    with pytest.raises(BadRequest, match="is not a number"):
        await read_body(Request(scope, receive), 1000)


@pytest.mark.parametrize("count", [10**12])
async def test_bytes_shape_far_over_the_data_is_a_400_not_an_allocation(
    rest: httpx.AsyncClient, count: int
) -> None:
    """A 110-byte request naming 10^12 BYTES elements is refused before any array exists."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [count, 1],
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    tracemalloc.start()
    try:
        response = await rest.post(
            "/v2/models/kitchen/infer",
            content=header,
            headers={"inference-header-content-length": str(len(header))},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400, response.text
    assert response.json() == {"error": f"input 'text' has {count} elements; the limit is 16777216"}
    assert peak < 16 << 20
