"""End to end: unchanged tritonclient (HTTP and gRPC) against a real ``inferline serve``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import ServerProcess, kitchen_reference, start_server, stop_server

pytestmark = pytest.mark.e2e

KITCHEN_TYPES = {"fp": "FP32", "i64": "INT64", "flag": "BOOL", "text": "BYTES"}


def kitchen_inputs(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    return {
        "fp": rng.normal(size=(rows, 4)).astype(np.float32),
        "i64": rng.integers(-(2**40), 2**40, size=(rows, 2), dtype=np.int64),
        "flag": rng.integers(0, 2, size=(rows, 1)).astype(bool),
        "text": np.array([f"é-{i}".encode() for i in range(rows)], dtype=object).reshape(rows, 1),
    }


def onnx_reference(model_dir: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(
        str(model_dir / "demo" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": rows}), strict=True))


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: ServerProcess):
    if request.param == "http":
        c = httpclient.InferenceServerClient(server.http_url)
        yield request.param, httpclient, c
    else:
        c = grpcclient.InferenceServerClient(server.grpc_url)
        yield request.param, grpcclient, c
    c.close()


def test_health_and_metadata(client) -> None:
    kind, _, c = client
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready("demo")
    assert c.is_model_ready("demo", "1")
    server_meta = c.get_server_metadata()
    model_meta = c.get_model_metadata("demo")
    if kind == "grpc":
        assert server_meta.name == "inferline"
        assert model_meta.name == "demo" and list(model_meta.versions) == ["1"]
        assert model_meta.inputs[0].name == "input" and list(model_meta.inputs[0].shape) == [-1, 20]
    else:
        assert server_meta["name"] == "inferline"
        assert model_meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 20]}]


@pytest.mark.parametrize("binary", [False, True])
def test_forest_equals_onnxruntime_in_process(client, binary: bool, model_dir: Path) -> None:
    kind, lib, c = client
    rows = np.random.default_rng(7).normal(size=(6, 20)).astype(np.float32)
    tensor = lib.InferInput("input", list(rows.shape), "FP32")
    if kind == "http":
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [
            lib.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")
        ]
    else:
        tensor.set_data_from_numpy(rows)
        outputs = [lib.InferRequestedOutput(n) for n in ("label", "probabilities")]
    result = c.infer("demo", [tensor], outputs=outputs, request_id="abc")
    expected = onnx_reference(model_dir, rows)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6
    )
    response = result.get_response()
    request_id = response.id if kind == "grpc" else response["id"]
    assert request_id == "abc"


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_family(client, binary: bool) -> None:
    kind, lib, c = client
    inputs = kitchen_inputs(5)
    tensors = []
    for name, array in inputs.items():
        tensor = lib.InferInput(name, list(array.shape), KITCHEN_TYPES[name])
        if kind == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    names = ["fp_sum", "i64_double", "flag_not", "text_upper"]
    if kind == "http":
        outputs = [lib.InferRequestedOutput(n, binary_data=binary) for n in names]
    else:
        outputs = [lib.InferRequestedOutput(n) for n in names]
    result = c.infer("kitchen", tensors, outputs=outputs)
    expected = kitchen_reference(inputs)
    np.testing.assert_allclose(result.as_numpy("fp_sum"), expected["fp_sum"], rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("i64_double"), expected["i64_double"])
    np.testing.assert_array_equal(result.as_numpy("flag_not"), expected["flag_not"])
    got_text = [
        v if isinstance(v, bytes) else str(v).encode()
        for v in result.as_numpy("text_upper").ravel()
    ]
    assert got_text == list(expected["text_upper"].ravel())


def test_errors_reach_the_client_with_their_codes(client) -> None:
    kind, lib, c = client
    from tritonclient.utils import InferenceServerException

    rows = np.zeros((1, 19), dtype=np.float32)
    tensor = lib.InferInput("input", [1, 19], "FP32")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as excinfo:
        c.infer("demo", [tensor])
    assert "has shape [1, 19]; the model expects [-1, 20]" in excinfo.value.message()
    if kind == "grpc":
        assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"
    else:
        assert excinfo.value.status() == "400"
    with pytest.raises(InferenceServerException) as excinfo:
        c.get_model_metadata("nope")
    assert "model 'nope' not found" in excinfo.value.message()
    assert c.is_server_ready()


def test_two_workers_share_the_ports(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "workers.log", "--workers", "2")
    try:
        # Ready means one worker answers; wait (polled, not timed) until both have started.
        for _ in range(300):
            if (tmp_path / "workers.log").read_text().count("Application startup complete") == 2:
                break
            time.sleep(0.1)
        rows = np.random.default_rng(9).normal(size=(2, 20)).astype(np.float32)
        expected = onnx_reference(model_dir, rows)["label"]
        for lib, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
            for _ in range(20):
                c = lib.InferenceServerClient(url)  # new connections spread over both workers
                tensor = lib.InferInput("input", [2, 20], "FP32")
                tensor.set_data_from_numpy(rows)
                np.testing.assert_array_equal(c.infer("demo", [tensor]).as_numpy("label"), expected)
                c.close()
        log = (tmp_path / "workers.log").read_text()
        assert log.count("Application startup complete") == 2, log
    finally:
        stop_server(server)


@pytest.mark.parametrize("engine", ["grpcio", "native"])
def test_grpc_engine_flag(model_dir: Path, tmp_path: Path, engine: str) -> None:
    """``--grpc-engine`` picks what serves gRPC; both answer the same unchanged client."""
    log = tmp_path / "engine.log"
    server = start_server(model_dir, log, "--grpc-engine", engine)
    try:
        rows = np.random.default_rng(3).normal(size=(2, 20)).astype(np.float32)
        c = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("input", [2, 20], "FP32")
        tensor.set_data_from_numpy(rows)
        expected = onnx_reference(model_dir, rows)["label"]
        np.testing.assert_array_equal(c.infer("demo", [tensor]).as_numpy("label"), expected)
        c.close()
        assert f"gRPC ({engine}) listening" in log.read_text()
    finally:
        stop_server(server)
