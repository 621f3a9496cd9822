"""V2 gRPC in process: a server on port 0 in the test's loop, real models behind it.

Every test that talks to a server runs against both engines (``engine``): grpc.aio
(grpcio) and the native HTTP/2 server (``inferline.transport.grpc_h2``).

Requests are built from the shared payloads in tests/data/ and encoded here by
hand (typed and raw), so a codec bug in the server cannot hide behind the same
bug in the test. Expected outputs come from ``kitchen_reference`` or from
onnxruntime run directly, never from the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.dataplane import DataPlane
from inferline.protocols import v2_grpc
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.protocols._grpc_codec import decode_request, encode_response
from inferline.settings import Settings
from inferline.types import InferResponse, Tensor
from tests.conftest import kitchen_reference
from tests.protocols.grpc_servers import engine, grpc_address, start_server

__all__ = ["engine", "grpc_address"]  # fixtures, imported to parametrize this module's servers

DATA = Path(__file__).parents[1] / "data"
NUMPY = {"FP32": "<f4", "FP16": "<f2", "FP64": "<f8", "INT64": "<i8", "INT8": "i1", "BOOL": "?"}
FIELDS = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents"}


# -- payloads, encoded by hand --------------------------------------------------------
def load_payload(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def payload_arrays(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for tensor in payload["inputs"]:
        if tensor["datatype"] == "BYTES":
            array = np.array([v.encode() for v in tensor["data"]], dtype=object)
        else:
            array = np.array(tensor["data"], dtype=NUMPY[tensor["datatype"]])
        arrays[tensor["name"]] = array.reshape(tensor["shape"])
    return arrays


def pack_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def to_pb(payload: dict[str, Any], model: str, *, raw: bool = False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=payload.get("id", ""))
    for key, value in payload.get("parameters", {}).items():
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}[type(value)]
        setattr(request.parameters[key], kind, value)
    arrays = payload_arrays(payload)
    for tensor in payload["inputs"]:
        name, datatype = tensor["name"], tensor["datatype"]
        entry = request.inputs.add(name=name, datatype=datatype, shape=tensor["shape"])
        array = arrays[name]
        if raw and datatype == "BYTES":
            request.raw_input_contents.append(pack_bytes(list(array.ravel())))
        elif raw:
            request.raw_input_contents.append(array.astype(NUMPY[datatype]).tobytes())
        elif datatype == "BYTES":
            entry.contents.bytes_contents.extend(array.ravel())
        else:
            getattr(entry.contents, FIELDS[datatype]).extend(array.ravel().tolist())
    return request


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Decode a response by hand, from whichever form the server chose."""
    result = {}
    for index, out in enumerate(response.outputs):
        if response.raw_output_contents:
            chunk = response.raw_output_contents[index]
            if out.datatype == "BYTES":
                values, pos = [], 0
                while pos < len(chunk):
                    (size,) = struct.unpack_from("<I", chunk, pos)
                    values.append(chunk[pos + 4 : pos + 4 + size])
                    pos += 4 + size
                array = np.array(values, dtype=object)
            else:
                array = np.frombuffer(chunk, dtype=NUMPY[out.datatype])
        elif out.datatype == "BYTES":
            array = np.array(list(out.contents.bytes_contents), dtype=object)
        else:
            array = np.array(getattr(out.contents, FIELDS[out.datatype]), dtype=NUMPY[out.datatype])
        result[out.name] = array.reshape(list(out.shape))
    return result


def assert_kitchen_outputs(response: pb.ModelInferResponse, payload: dict[str, Any]) -> None:
    expected = kitchen_reference(payload_arrays(payload))
    got = outputs_of(response)
    assert {o.name: o.datatype for o in response.outputs} == {
        "fp_sum": "FP32",
        "i64_double": "INT64",
        "flag_not": "BOOL",
        "text_upper": "BYTES",
    }
    np.testing.assert_allclose(got["fp_sum"], expected["fp_sum"], rtol=1e-6)
    np.testing.assert_array_equal(got["i64_double"], expected["i64_double"])
    np.testing.assert_array_equal(got["flag_not"], expected["flag_not"])
    assert got["text_upper"].tolist() == expected["text_upper"].tolist()


def trailers(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata or ()}


# -- the in-process server ------------------------------------------------------------
@pytest.fixture
async def channel(grpc_address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


async def still_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    payload = load_payload("infer_kitchen.json")
    assert_kitchen_outputs(await stub.ModelInfer(to_pb(payload, "kitchen")), payload)


# -- health and metadata --------------------------------------------------------------
async def test_live_ready_and_server_metadata(
    stub: pb_grpc.GRPCInferenceServiceStub, dataplane: DataPlane
) -> None:
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live is True
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready is True
    meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    expected = dataplane.server_metadata()
    assert (meta.name, meta.version) == ("inferline", expected["version"])
    assert list(meta.extensions) == expected["extensions"]


async def test_model_metadata_and_model_ready(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    for version in ("", "1"):
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="kitchen", version=version))
        assert (meta.name, list(meta.versions), meta.platform) == ("kitchen", ["1"], "python")
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("fp", "FP32", [-1, 4]),
            ("i64", "INT64", [-1, 2]),
            ("flag", "BOOL", [-1, 1]),
            ("text", "BYTES", [-1, 1]),
        ]
        assert [t.name for t in meta.outputs] == ["fp_sum", "i64_double", "flag_not", "text_upper"]
        ready = await stub.ModelReady(pb.ModelReadyRequest(name="kitchen", version=version))
        assert ready.ready is True
    demo = await stub.ModelMetadata(pb.ModelMetadataRequest(name="demo"))
    assert demo.platform == "onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in demo.inputs] == [
        ("input", "FP32", [-1, 20])
    ]


async def test_model_ready_and_metadata_of_unknown_model_are_not_found(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    for call, message in (
        (stub.ModelReady(pb.ModelReadyRequest(name="nope")), "model 'nope' not found"),
        (stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")), "model 'nope' not found"),
        (
            stub.ModelReady(pb.ModelReadyRequest(name="kitchen", version="9")),
            "model 'kitchen' has no version '9'",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert message in info.value.details()


async def test_repository_index_lists_every_version(
    stub: pb_grpc.GRPCInferenceServiceStub, dataplane: DataPlane
) -> None:
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    listed = [(m.name, m.version, m.state) for m in index.models]
    assert listed == [(name, "1", "READY") for name in dataplane.model_names()]
    assert {"demo", "kitchen"} <= {m.name for m in index.models}


# -- inference ------------------------------------------------------------------------
async def test_infer_typed_contents_every_datatype(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    payload = load_payload("infer_kitchen.json")
    call = stub.ModelInfer(to_pb(payload, "kitchen"), metadata=(("x-request-id", "trace-42"),))
    response = await call
    # Typed in, typed out.
    assert not response.raw_output_contents
    assert response.outputs[0].contents.fp32_contents
    assert_kitchen_outputs(response, payload)
    assert (response.model_name, response.model_version, response.id) == (
        "kitchen",
        "1",
        "kitchen-1",
    )
    sent = trailers(await call.trailing_metadata())
    assert sent["x-request-id"] == "trace-42"
    assert sent["inferline-model-version"] == "1"


async def test_infer_raw_contents_every_datatype(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    payload = load_payload("infer_kitchen.json")
    call = stub.ModelInfer(to_pb(payload, "kitchen", raw=True))
    response = await call
    # Raw in, raw out, as Triton answers.
    assert len(response.raw_output_contents) == len(response.outputs) == 4
    assert not any(o.HasField("contents") for o in response.outputs)
    assert_kitchen_outputs(response, payload)
    assert response.id == "kitchen-1"
    request_id = trailers(await call.trailing_metadata())["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
async def test_requested_outputs_in_order(
    stub: pb_grpc.GRPCInferenceServiceStub, raw: bool
) -> None:
    payload = load_payload("infer_kitchen.json")
    request = to_pb(payload, "kitchen", raw=raw)
    request.outputs.add(name="text_upper")
    request.outputs.add(name="fp_sum")
    response = await stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["text_upper", "fp_sum"]
    assert len(response.raw_output_contents) == (2 if raw else 0)
    got = outputs_of(response)
    expected = kitchen_reference(payload_arrays(payload))
    assert got["text_upper"].tolist() == expected["text_upper"].tolist()
    np.testing.assert_allclose(got["fp_sum"], expected["fp_sum"], rtol=1e-6)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
async def test_onnx_model_matches_onnxruntime(
    stub: pb_grpc.GRPCInferenceServiceStub, model_dir: Path, raw: bool
) -> None:
    payload = load_payload("infer_demo.json")
    response = await stub.ModelInfer(to_pb(payload, "demo", raw=raw))
    rows = payload_arrays(payload)["input"]
    session = onnxruntime.InferenceSession(
        str(model_dir / "demo" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, {"input": rows}), strict=True))
    got = outputs_of(response)
    assert set(got) == set(expected) == {"label", "probabilities"}
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
    assert response.id == "demo-1"


# -- errors ---------------------------------------------------------------------------
def kitchen(raw: bool = False) -> pb.ModelInferRequest:
    return to_pb(load_payload("infer_kitchen.json"), "kitchen", raw=raw)


def with_change(raw: bool, change: Any) -> pb.ModelInferRequest:
    request = kitchen(raw)
    change(request)
    return request


def set_field(path: str, value: Any) -> Any:
    def change(request: pb.ModelInferRequest) -> None:
        target: Any = request
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        if last.isdigit():
            target[int(last)] = value
        elif isinstance(value, list):
            del getattr(target, last)[:]
            getattr(target, last).extend(value)
        else:
            setattr(target, last, value)

    return change


def add_input(**fields: Any) -> Any:
    return lambda request: request.inputs.add(**fields)


def add_output(name: str) -> Any:
    return lambda request: request.outputs.add(name=name)


def as_fp64(request: pb.ModelInferRequest) -> None:
    """A well-formed FP64 tensor where the model expects FP32."""
    request.inputs[0].datatype = "FP64"
    request.raw_input_contents[0] = np.arange(8, dtype="<f8").tobytes()


def drop_raw(request: pb.ModelInferRequest) -> None:
    del request.raw_input_contents[-1]


def typed_into_raw(request: pb.ModelInferRequest) -> None:
    request.inputs[0].contents.fp32_contents.extend([1.0] * 8)


def too_many_inputs(request: pb.ModelInferRequest) -> None:
    for i in range(257):
        request.inputs.add(name=f"x{i}", datatype="FP32", shape=[1]).contents.fp32_contents.append(
            0
        )


BAD = [
    # (raw request?, change, status, message)
    pytest.param(
        False, set_field("model_name", "nope"), "NOT_FOUND", "model 'nope' not found", id="model"
    ),
    pytest.param(
        False,
        set_field("model_version", "9"),
        "NOT_FOUND",
        "model 'kitchen' has no version '9'; available: 1",
        id="version",
    ),
    pytest.param(
        True,
        as_fp64,
        "INVALID_ARGUMENT",
        "input 'fp' has datatype FP64; the model expects FP32",
        id="wrong-datatype",
    ),
    pytest.param(
        False,
        set_field("inputs.0.datatype", "FP99"),
        "INVALID_ARGUMENT",
        "input 'fp' has unknown datatype 'FP99'",
        id="unknown-datatype",
    ),
    pytest.param(
        False,
        set_field("inputs.0.shape", [4, 2]),
        "INVALID_ARGUMENT",
        "input 'fp' has shape [4, 2]; the model expects [-1, 4]",
        id="wrong-shape",
    ),
    pytest.param(
        False,
        set_field("inputs.0.shape", [2, -4]),
        "INVALID_ARGUMENT",
        "input 'fp' has shape [2, -4]; dimensions must be >= 0",
        id="negative-dim",
    ),
    pytest.param(
        False,
        add_input(name="nope", datatype="INT64", shape=[1], contents={"int64_contents": [1]}),
        "INVALID_ARGUMENT",
        "unknown input 'nope' for model 'kitchen'",
        id="unknown-input",
    ),
    pytest.param(
        False, add_output("nope"), "INVALID_ARGUMENT", "unknown output 'nope'", id="unknown-output"
    ),
    pytest.param(
        False,
        set_field("inputs.0.contents.fp32_contents", [1.0] * 7),
        "INVALID_ARGUMENT",
        "input 'fp' (FP32, shape [2, 4]) needs 8 values in contents.fp32_contents; got 7",
        id="typed-count",
    ),
    pytest.param(
        False,
        set_field("inputs.3.contents.bytes_contents", [b"only-one"]),
        "INVALID_ARGUMENT",
        "input 'text' (BYTES, shape [2, 1]) needs 2 values in contents.bytes_contents; got 1",
        id="typed-count-bytes",
    ),
    pytest.param(
        True,
        set_field("raw_input_contents.0", b"\0" * 31),
        "INVALID_ARGUMENT",
        "input 'fp' (FP32, shape [2, 4]) needs 32 bytes of raw_input_contents; got 31",
        id="raw-size",
    ),
    pytest.param(
        True,
        set_field("raw_input_contents.3", struct.pack("<I", 100) + b"short"),
        "INVALID_ARGUMENT",
        "input 'text': raw BYTES element 0 runs past the data",
        id="raw-bytes-prefix",
    ),
    pytest.param(
        True,
        drop_raw,
        "INVALID_ARGUMENT",
        "raw_input_contents has 3 entries for 4 inputs",
        id="raw-count",
    ),
    pytest.param(
        True,
        typed_into_raw,
        "INVALID_ARGUMENT",
        "input 'fp' has typed contents but the request uses raw_input_contents",
        id="mixed",
    ),
    pytest.param(
        False,
        set_field("inputs.0.shape", [1, 10**12]),
        "INVALID_ARGUMENT",
        "input 'fp' has 1000000000000 elements; the limit is 16777216",
        id="elements-typed",
    ),
    pytest.param(
        True,
        set_field("inputs.0.shape", [10**12, 4]),
        "INVALID_ARGUMENT",
        "input 'fp' has 4000000000000 elements; the limit is 16777216",
        id="elements-raw",
    ),
    pytest.param(
        False,
        too_many_inputs,
        "INVALID_ARGUMENT",
        "request has 261 input tensors; the limit is 256",
        id="tensors",
    ),
    pytest.param(
        False,
        lambda r: r.inputs.pop(1),
        "INVALID_ARGUMENT",
        "model 'kitchen' is missing input(s): i64",
        id="missing-input",
    ),
]


@pytest.mark.parametrize(("raw", "change", "code", "message"), BAD)
async def test_bad_requests_get_precise_statuses(
    stub: pb_grpc.GRPCInferenceServiceStub, raw: bool, change: Any, code: str, message: str
) -> None:
    call = stub.ModelInfer(with_change(raw, change), metadata=(("x-request-id", "bad-1"),))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode[code]
    assert message in info.value.details(), info.value.details()
    assert "Traceback" not in info.value.details()
    assert trailers(info.value.trailing_metadata())["x-request-id"] == "bad-1"
    await still_serving(stub)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"\x0a\x05ab", "Wire format was corrupt"), (b"\x0a\x02\xff\xfe", "bad UTF-8")],
    ids=["truncated", "bad-utf8"],
)
async def test_malformed_body_is_invalid_argument(
    channel: grpc.aio.Channel, stub: pb_grpc.GRPCInferenceServiceStub, body: bytes, reason: str
) -> None:
    """Bytes that are not a ModelInferRequest: a client error with the request id, not UNKNOWN."""
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda data: data,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await infer(body, metadata=(("x-request-id", "bad-body"),))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert details.startswith("request is not a valid inference.ModelInferRequest: "), details
    assert reason in details and "Traceback" not in details and "class" not in details
    assert trailers(info.value.trailing_metadata())["x-request-id"] == "bad-body"
    await still_serving(stub)


async def test_unexpected_error_is_internal_with_request_id_and_no_traceback(
    stub: pb_grpc.GRPCInferenceServiceStub,
    channel: grpc.aio.Channel,
    dataplane: DataPlane,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: Any) -> Any:
        raise RuntimeError("secret stack detail")

    names = ("live", "ready", "model_ready", "server_metadata", "model_metadata")
    for name in (*names, "infer", "model_names", "resolve", "index"):
        monkeypatch.setattr(dataplane, name, explode)
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        request = getattr(pb, method.input_type.name)()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(stub, method.name)(request)
        assert info.value.code() == grpc.StatusCode.INTERNAL, method.name
        request_id = trailers(info.value.trailing_metadata())["x-request-id"]
        assert info.value.details() == f"internal error; request id {request_id}"
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="")
    for call in (
        health.Check(check),
        health.List(health_pb2.HealthListRequest()),
        health.Watch(check).read(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in info.value.details()
    monkeypatch.undo()
    await still_serving(stub)


async def test_message_above_the_limit_is_resource_exhausted(
    dataplane: DataPlane, settings: Settings, engine: str
) -> None:
    small = settings.model_copy(update={"grpc_max_message_bytes": 64 * 1024})
    server, address = await start_server(dataplane, small, engine)
    try:
        async with grpc.aio.insecure_channel(address) as chan:
            stub = pb_grpc.GRPCInferenceServiceStub(chan)
            rows = 3000  # 3000 x 20 FP32 = 240 KB, over the 64 KiB limit
            request = pb.ModelInferRequest(model_name="demo")
            request.inputs.add(name="input", datatype="FP32", shape=[rows, 20])
            request.raw_input_contents.append(b"\0" * (rows * 20 * 4))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(request)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert request.ByteSize() > 64 * 1024
            await still_serving(stub)
    finally:
        await server.stop(None)


def test_server_options_come_from_settings(settings: Settings) -> None:
    options = dict(
        v2_grpc.server_options(settings.model_copy(update={"grpc_max_message_bytes": 7}))
    )
    assert options == {
        "grpc.max_receive_message_length": 7,
        "grpc.max_send_message_length": 7,
        "grpc.so_reuseport": 1,
        "grpc.max_connection_idle_ms": 300_000,
        "grpc.server_handshake_timeout_ms": 10_000,
        "grpc.max_metadata_size": 16_384,
    }


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
async def test_grpc_threads_yield_to_the_loop(grpc_address: str, engine: str) -> None:
    """grpc's threads no longer preempt the event loop; the loop's own thread is unchanged."""
    if engine == "native":
        pytest.skip("grpcio only: the native engine starts no threads of its own")
    assert v2_grpc.batch_grpc_threads() > 0
    policies = {}
    for task in os.listdir("/proc/self/task"):
        comm = Path(f"/proc/self/task/{task}/comm").read_text().strip()
        policies[int(task)] = (comm, os.sched_getscheduler(int(task)))
    grpc_threads = [p for c, p in policies.values() if c.startswith(("event_engine", "grpc_"))]
    assert grpc_threads and set(grpc_threads) == {os.SCHED_BATCH}
    poller = [t for t in threading.enumerate() if "(_poll_wrapper)" in t.name]
    poller_policies = {policies[t.native_id][1] for t in poller if t.native_id}
    assert poller_policies == {os.SCHED_BATCH}
    assert os.sched_getscheduler(threading.main_thread().native_id or 0) == os.SCHED_OTHER


# -- health ---------------------------------------------------------------------------
async def test_health_service_follows_readiness(
    channel: grpc.aio.Channel, dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    status = health_pb2.HealthCheckResponse
    for service in ("", "inference.GRPCInferenceService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == status.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await health.List(health_pb2.HealthListRequest())
    assert {name: s.status for name, s in listed.statuses.items()} == {
        "": status.SERVING,
        "inference.GRPCInferenceService": status.SERVING,
    }

    monkeypatch.setattr(v2_grpc, "HEALTH_POLL_SECONDS", 0.01)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == status.SERVING
    monkeypatch.setattr(dataplane, "ready", lambda: False)
    assert (await asyncio.wait_for(watch.read(), 5)).status == status.NOT_SERVING
    watch.cancel()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == status.NOT_SERVING


# -- an unchanged third-party client --------------------------------------------------
async def test_tritonclient_grpc_aio_unchanged(grpc_address: str) -> None:
    import tritonclient.grpc.aio as triton

    payload = load_payload("infer_kitchen.json")
    arrays = payload_arrays(payload)
    client = triton.InferenceServerClient(url=grpc_address)
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready("kitchen")
        meta = await client.get_model_metadata("kitchen", as_json=True)
        assert [i["name"] for i in meta["inputs"]] == ["fp", "i64", "flag", "text"]
        inputs = []
        for tensor in payload["inputs"]:
            item = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            item.set_data_from_numpy(arrays[tensor["name"]])
            inputs.append(item)
        result = await client.infer("kitchen", inputs, request_id="triton-1")
        expected = kitchen_reference(arrays)
        np.testing.assert_allclose(result.as_numpy("fp_sum"), expected["fp_sum"], rtol=1e-6)
        np.testing.assert_array_equal(result.as_numpy("i64_double"), expected["i64_double"])
        np.testing.assert_array_equal(result.as_numpy("flag_not"), expected["flag_not"])
        assert result.as_numpy("text_upper").tolist() == expected["text_upper"].tolist()
        assert result.get_response().id == "triton-1"
        assert result.get_response().model_version == "1"
    finally:
        await client.close()


# -- the converters on their own ------------------------------------------------------
def test_parameters_become_python_values() -> None:
    request = to_pb(load_payload("infer_kitchen.json"), "kitchen")
    request.parameters["ratio"].double_param = 0.25
    request.parameters["big"].uint64_param = 2**64 - 1
    request.parameters["unset"].SetInParent()
    request.inputs[0].parameters["scale"].int64_param = -3
    request.outputs.add(name="fp_sum").parameters["binary_data"].bool_param = True
    decoded = decode_request(request, max_tensors=8, max_elements=100)
    assert decoded.parameters == {
        "trace": True,
        "priority": 2,
        "tag": "shared-payload",
        "ratio": 0.25,
        "big": 2**64 - 1,
        "unset": None,
    }
    assert decoded.inputs[0].parameters == {"scale": -3}
    assert [(o.name, o.parameters) for o in decoded.outputs or ()] == [
        ("fp_sum", {"binary_data": True})
    ]
    assert decoded.id == "kitchen-1"
    # Zero-copy over the message for raw inputs: a read-only view, no new buffer.
    raw = decode_request(
        to_pb(load_payload("infer_kitchen.json"), "kitchen", raw=True),
        max_tensors=8,
        max_elements=100,
    )
    assert not raw.inputs[0].data.flags.writeable and not raw.inputs[0].data.flags.owndata


def test_narrow_integers_out_of_range_are_refused() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="small", datatype="INT8", shape=[3]).contents.int_contents.extend(
        [1, -128, 300]
    )
    with pytest.raises(Exception, match=r"input 'small' element 2 is 300, out of range for INT8"):
        decode_request(request, max_tensors=8, max_elements=100)
    request.inputs[0].contents.int_contents[2] = 127
    decoded = decode_request(request, max_tensors=8, max_elements=100)
    assert decoded.inputs[0].data.dtype == np.int8
    assert decoded.inputs[0].data.tolist() == [1, -128, 127]


def test_fp16_is_raw_only_and_forces_a_raw_response() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="half", datatype="FP16", shape=[2])
    with pytest.raises(Exception, match="FP16 data must be sent in raw_input_contents"):
        decode_request(request, max_tensors=8, max_elements=100)
    half = np.array([1.5, -2.0], dtype=np.float16)
    outputs = [
        Tensor("half", "FP16", [2], half),
        Tensor("n", "INT64", [1], np.array([7])),
    ]
    response = InferResponse(
        "m", "3", outputs, id="r", parameters={"ok": True, "n": 2, "x": 0.5, "s": "t"}
    )
    message = encode_response(response, raw=False)
    assert len(message.raw_output_contents) == 2
    assert np.frombuffer(message.raw_output_contents[0], "<f2").tolist() == [1.5, -2.0]
    assert np.frombuffer(message.raw_output_contents[1], "<i8").tolist() == [7]
    assert {k: v.WhichOneof("parameter_choice") for k, v in message.parameters.items()} == {
        "ok": "bool_param",
        "n": "int64_param",
        "x": "double_param",
        "s": "string_param",
    }
