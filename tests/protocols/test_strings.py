"""Strings end to end: BYTES reach string models as ``str`` on every protocol.

onnxruntime compares the ``bytes`` b"hello" as the string "b'hello'", so a
string model fed raw bytes answers its default for every row. The ONNX model is
built here with ``onnx.helper`` (two ``ai.onnx.ml`` LabelEncoders, string->int64
and string->string); the scikit-learn one is a one-hot pipeline fitted on a
string matrix. Expected answers come from onnxruntime and scikit-learn run in
this process, never from the server.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skops.io as sio
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from inferline.dataplane import DataPlane
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings
from tests.protocols.grpc_servers import engine, grpc_address

__all__ = ["engine", "grpc_address"]  # fixtures, imported to parametrize the gRPC tests

KEYS = ["hello", "world", "héllo", "日本"]
TEXTS = ["world", "hello", "nope", "日本", "héllo", ""]
PLANS = ["basic", "pro", "team"]

SKLEARN_SETTINGS = """\
runtime: sklearn
inputs:
  - {name: input, datatype: BYTES, shape: [-1, 1]}
outputs:
  - {name: predict, datatype: BYTES, shape: [-1]}
"""


def label_encoder_model() -> bytes:
    """``text`` (string [N]) -> ``id`` (int64, default -1) and ``upper`` (string, default "?")."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["id"],
                domain="ai.onnx.ml",
                keys_strings=KEYS,
                values_int64s=list(range(1, len(KEYS) + 1)),
                default_int64=-1,
            ),
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["upper"],
                domain="ai.onnx.ml",
                keys_strings=KEYS,
                values_strings=[k.upper() for k in KEYS],
                default_string="?",
            ),
        ],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [
            helper.make_tensor_value_info("id", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("upper", TensorProto.STRING, [None]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)],
        ir_version=8,
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def plan_pipeline() -> Any:
    """One-hot over a string matrix (unknown plans ignored), then a logistic regression
    with string labels: strings in, strings out."""
    rng = np.random.default_rng(3)
    plans = rng.choice(PLANS, size=(120, 1))
    labels = np.array([{"basic": "low", "pro": "mid", "team": "high"}[p] for p in plans[:, 0]])
    return make_pipeline(
        OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=500)
    ).fit(plans, labels)


@pytest.fixture(scope="module")
def strings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("strings")
    (root / "strings" / "1").mkdir(parents=True)
    (root / "strings" / "model-settings.yaml").write_text("runtime: onnx\n")
    (root / "strings" / "1" / "model.onnx").write_bytes(label_encoder_model())
    (root / "plans" / "1").mkdir(parents=True)
    (root / "plans" / "model-settings.yaml").write_text(SKLEARN_SETTINGS)
    sio.dump(plan_pipeline(), root / "plans" / "1" / "model.skops")
    return root


@pytest.fixture
def settings(strings_dir: Path) -> Settings:
    return Settings(model_dir=strings_dir, http_port=0, grpc_port=0)


@pytest.fixture
async def dataplane(settings: Settings) -> AsyncIterator[DataPlane]:
    plane = DataPlane(settings)
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def rest(dataplane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(dataplane))
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as client:
        yield client


def onnx_reference(texts: list[str]) -> dict[str, list[Any]]:
    session = ort.InferenceSession(label_encoder_model(), providers=["CPUExecutionProvider"])
    ids, upper = session.run(["id", "upper"], {"text": np.array(texts, dtype=object)})
    return {"id": ids.tolist(), "upper": upper.tolist()}


def pack(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def unpack(chunk: bytes) -> list[str]:
    values, pos = [], 0
    while pos < len(chunk):
        (size,) = struct.unpack_from("<I", chunk, pos)
        values.append(chunk[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    return values


async def test_reference_answers_are_not_all_defaults() -> None:
    """The test data hits known keys, so a server answering defaults cannot pass."""
    expected = onnx_reference(TEXTS)
    assert expected["id"] == [2, 1, -1, 4, 3, -1]
    assert expected["upper"] == ["WORLD", "HELLO", "?", "日本", "HÉLLO", "?"]


async def test_rest_json_strings_reach_onnx_as_text(rest: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [6], "data": TEXTS}]}
    response = await rest.post("/v2/models/strings/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    expected = onnx_reference(TEXTS)
    assert outputs["id"]["data"] == expected["id"]
    assert outputs["upper"]["datatype"] == "BYTES"
    assert outputs["upper"]["data"] == expected["upper"]


async def test_rest_binary_strings_reach_onnx_as_text(rest: httpx.AsyncClient) -> None:
    raw = pack([t.encode() for t in TEXTS])
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [6],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = httpx.Request("POST", "/", json=header).content
    response = await rest.post(
        "/v2/models/strings/infer",
        content=head + raw,
        headers={
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    doc = httpx.Response(200, content=response.content[:length]).json()
    data, pos, got = response.content[length:], 0, {}
    for out in doc["outputs"]:
        size = out["parameters"]["binary_data_size"]
        chunk = data[pos : pos + size]
        pos += size
        got[out["name"]] = (
            unpack(chunk) if out["datatype"] == "BYTES" else np.frombuffer(chunk, "<i8").tolist()
        )
    assert got == onnx_reference(TEXTS)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
async def test_grpc_strings_reach_onnx_as_text(grpc_address: str, raw: bool) -> None:
    request = pb.ModelInferRequest(model_name="strings")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)])
    encoded = [t.encode() for t in TEXTS]
    if raw:
        request.raw_input_contents.append(pack(encoded))
    else:
        tensor.contents.bytes_contents.extend(encoded)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    got: dict[str, list[Any]] = {}
    for index, out in enumerate(response.outputs):
        if raw:
            chunk = response.raw_output_contents[index]
            got[out.name] = (
                unpack(chunk) if out.datatype == "BYTES" else np.frombuffer(chunk, "<i8").tolist()
            )
        elif out.datatype == "BYTES":
            got[out.name] = [v.decode() for v in out.contents.bytes_contents]
        else:
            got[out.name] = list(out.contents.int64_contents)
    assert got == onnx_reference(TEXTS)


async def test_tfserving_and_mlflow_strings_reach_onnx_as_text(rest: httpx.AsyncClient) -> None:
    expected = onnx_reference(TEXTS)
    tfs = await rest.post("/v1/models/strings:predict", json={"instances": TEXTS})
    assert tfs.status_code == 200, tfs.text
    assert tfs.json()["predictions"] == [
        {"id": i, "upper": u} for i, u in zip(expected["id"], expected["upper"], strict=True)
    ]
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
    tfs = await rest.post("/v1/models/strings:predict", json={"inputs": {"text": b64}})
    assert tfs.status_code == 200, tfs.text
    assert tfs.json()["outputs"] == expected
    flow = await rest.post("/models/strings/invocations", json={"inputs": {"text": TEXTS}})
    assert flow.status_code == 200, flow.text
    assert flow.json()["predictions"] == expected


async def test_non_utf8_bytes_for_a_string_model_are_a_400_naming_the_input(
    rest: httpx.AsyncClient, grpc_address: str
) -> None:
    raw = pack([b"hello", b"\xff\xfe"])
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    head = httpx.Request("POST", "/", json=header).content
    response = await rest.post(
        "/v2/models/strings/infer",
        content=head + raw,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert response.status_code == 400, response.text
    assert "input 'text'" in response.json()["error"]
    assert "UTF-8" in response.json()["error"]
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(raw)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in info.value.details()


@pytest.mark.parametrize("form", ["json", "binary", "grpc-typed", "grpc-raw"])
async def test_sklearn_string_matrix_gets_text(
    rest: httpx.AsyncClient, grpc_address: str, form: str
) -> None:
    """A pipeline fitted on a str matrix sees str, not bytes it would call unknown."""
    plans = ["team", "basic", "pro", "team", "gold"]
    expected = plan_pipeline().predict(np.array(plans, dtype=object).reshape(-1, 1)).tolist()
    assert len(set(expected)) > 1
    raw = pack([p.encode() for p in plans])
    if form == "json":
        body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [5, 1], "data": plans}]}
        response = await rest.post("/v2/models/plans/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == expected
    elif form == "binary":
        tensor = {
            "name": "input",
            "datatype": "BYTES",
            "shape": [5, 1],
            "parameters": {"binary_data_size": len(raw)},
        }
        head = httpx.Request(
            "POST", "/", json={"inputs": [tensor], "parameters": {"binary_data_output": True}}
        ).content
        response = await rest.post(
            "/v2/models/plans/infer",
            content=head + raw,
            headers={"inference-header-content-length": str(len(head))},
        )
        assert response.status_code == 200, response.text
        length = int(response.headers["inference-header-content-length"])
        assert unpack(response.content[length:]) == expected
    else:
        request = pb.ModelInferRequest(model_name="plans")
        entry = request.inputs.add(name="input", datatype="BYTES", shape=[5, 1])
        if form == "grpc-raw":
            request.raw_input_contents.append(raw)
        else:
            entry.contents.bytes_contents.extend(p.encode() for p in plans)
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            answer = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        got = (
            unpack(answer.raw_output_contents[0])
            if form == "grpc-raw"
            else [v.decode() for v in answer.outputs[0].contents.bytes_contents]
        )
        assert got == expected


async def test_a_column_vector_for_a_1d_input_is_a_400_saying_the_shape_to_send(
    rest: httpx.AsyncClient, grpc_address: str
) -> None:
    """[N, 1] for a [-1] input is refused, as Triton does, with the shape that would fit."""
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": KEYS[:2]}]}
    response = await rest.post("/v2/models/strings/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "input 'text' has shape [2, 1]; the model expects [-1] (-1: any size): "
        "send it as shape [2]"
    }
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="text", datatype="BYTES", shape=[2, 1])
    request.raw_input_contents.append(pack([k.encode() for k in KEYS[:2]]))
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().endswith("send it as shape [2]")
    # ...and the other way round: [N] for a [-1, 1] input.
    flat = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2], "data": PLANS[:2]}]}
    response = await rest.post("/v2/models/plans/infer", json=flat)
    assert response.status_code == 400, response.text
    assert response.json()["error"].endswith(
        "the model expects [-1, 1] (-1: any size): send it as shape [2, 1]"
    )


KINDS_CODE = """\
import numpy as np


class Model:
    text_inputs = TEXT

    def predict(self, inputs):
        kinds = [type(v).__name__ for v in inputs["text"].ravel()]
        return {"kind": np.array(kinds, dtype=object)}
"""
KINDS_SETTINGS = """\
runtime: python
inputs: [{name: text, datatype: BYTES, shape: [-1]}]
outputs: [{name: kind, datatype: BYTES, shape: [-1]}]
"""


@pytest.mark.parametrize(("text", "kind"), [(False, "bytes"), (True, "str")])
async def test_a_python_model_gets_bytes_unless_it_asks_for_text(
    tmp_path: Path, text: bool, kind: str
) -> None:
    (tmp_path / "kinds" / "1").mkdir(parents=True)
    (tmp_path / "kinds" / "model-settings.yaml").write_text(KINDS_SETTINGS)
    (tmp_path / "kinds" / "1" / "model.py").write_text(KINDS_CODE.replace("TEXT", str(text)))
    plane = DataPlane(Settings(model_dir=tmp_path))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=build_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            body = {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS[:2]}]
            }
            response = await client.post("/v2/models/kinds/infer", json=body)
    finally:
        await plane.stop()
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [kind, kind]
