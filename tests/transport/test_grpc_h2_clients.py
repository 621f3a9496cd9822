"""Both gRPC engines under real grpcio clients (sync and aio): what the V2 tests do not reach.

Deadlines, cancellation, metadata both ways, messages larger than the HTTP/2
windows in both directions, gzip, many concurrent streams on one connection,
and health ``Watch`` from the sync client. Every test runs against grpcio and
the native server (``engine``): same client, same expectations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.dataplane import DataPlane
from inferline.protocols import v2_grpc
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from tests.protocols.grpc_servers import engine, grpc_address
from tests.protocols.test_v2_grpc import (
    assert_kitchen_outputs,
    load_payload,
    outputs_of,
    to_pb,
    trailers,
)

__all__ = ["engine", "grpc_address"]

KITCHEN = load_payload("infer_kitchen.json")


@pytest.fixture
async def stub(grpc_address: str) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


class Slow:
    """A data plane ``infer`` that waits until released, and records its cancellation."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def wait_for(event: asyncio.Event, what: str) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{what} did not happen")


def big_text_request(size: int) -> pb.ModelInferRequest:
    """A kitchen request whose text input (and so its upper-cased output) is ``size`` bytes."""
    request = to_pb(KITCHEN, "kitchen")
    request.inputs[3].contents.bytes_contents[0] = b"a" * size
    return request


# -- the sync client ---------------------------------------------------------------
async def test_sync_client_metadata_and_trailers(grpc_address: str) -> None:
    def call() -> tuple[Any, dict[str, str]]:
        with grpc.insecure_channel(grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply, info = stub.ModelInfer.with_call(
                to_pb(KITCHEN, "kitchen", raw=True), metadata=(("x-request-id", "sync-1"),)
            )
            return reply, trailers(info.trailing_metadata())

    reply, sent = await asyncio.to_thread(call)
    assert_kitchen_outputs(reply, KITCHEN)
    assert sent["x-request-id"] == "sync-1" and sent["inferline-model-version"] == "1"


async def test_sync_client_health_watch_streams_until_cancelled(grpc_address: str) -> None:
    def watch() -> list[int]:
        with grpc.insecure_channel(grpc_address) as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            first = next(call)
            call.cancel()
            with pytest.raises(grpc.RpcError) as info:
                next(call)
            assert info.value.code() == grpc.StatusCode.CANCELLED
            return [first.status]

    assert await asyncio.to_thread(watch) == [health_pb2.HealthCheckResponse.SERVING]


async def test_sync_client_deadline(
    grpc_address: str, dataplane: DataPlane, monkeypatch: Any
) -> None:
    slow = Slow()
    monkeypatch.setattr(dataplane, "infer", slow)

    def call() -> grpc.StatusCode:
        with grpc.insecure_channel(grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(to_pb(KITCHEN, "kitchen"), timeout=0.2)
            return info.value.code()  # type: ignore[no-any-return]

    assert await asyncio.to_thread(call) == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(slow.cancelled, "cancelling the handler at the deadline")


# -- the aio client ----------------------------------------------------------------
async def test_deadline_cancels_the_handler(
    stub: pb_grpc.GRPCInferenceServiceStub, dataplane: DataPlane, monkeypatch: Any
) -> None:
    slow = Slow()
    monkeypatch.setattr(dataplane, "infer", slow)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(to_pb(KITCHEN, "kitchen"), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(slow.cancelled, "cancelling the handler at the deadline")
    monkeypatch.undo()
    assert_kitchen_outputs(await stub.ModelInfer(to_pb(KITCHEN, "kitchen")), KITCHEN)


async def test_client_cancellation_cancels_the_handler(
    stub: pb_grpc.GRPCInferenceServiceStub, dataplane: DataPlane, monkeypatch: Any
) -> None:
    slow = Slow()
    monkeypatch.setattr(dataplane, "infer", slow)
    call = stub.ModelInfer(to_pb(KITCHEN, "kitchen"))
    await wait_for(slow.started, "the request reaching the model")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_for(slow.cancelled, "cancelling the handler when the client cancels")


@pytest.mark.parametrize("size", [100_000, 3_000_000], ids=["100k", "3M"])
async def test_messages_bigger_than_the_windows_both_ways(
    stub: pb_grpc.GRPCInferenceServiceStub, size: int
) -> None:
    """Request and answer each span many DATA frames and several WINDOW_UPDATEs."""
    request = big_text_request(size)
    assert request.ByteSize() > size
    call = stub.ModelInfer(request, metadata=(("x-request-id", f"big-{size}"),), timeout=60)
    reply = await call
    text = outputs_of(reply)["text_upper"].ravel().tolist()
    assert text[0] == b"A" * size and reply.ByteSize() > size
    assert trailers(await call.trailing_metadata())["x-request-id"] == f"big-{size}"


async def test_gzip_requests(grpc_address: str) -> None:
    async with grpc.aio.insecure_channel(
        grpc_address, compression=grpc.Compression.Gzip
    ) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.ModelInfer(big_text_request(50_000))
        assert outputs_of(reply)["text_upper"].ravel()[0] == b"A" * 50_000


async def test_many_concurrent_streams_on_one_connection(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    async def one(i: int) -> None:
        request = to_pb(KITCHEN, "kitchen", raw=i % 2 == 0)
        request.id = f"r{i}"
        call = stub.ModelInfer(request, metadata=(("x-request-id", f"id-{i}"),))
        reply = await call
        assert reply.id == f"r{i}"
        assert_kitchen_outputs(reply, KITCHEN)
        assert trailers(await call.trailing_metadata())["x-request-id"] == f"id-{i}"

    await asyncio.gather(*(one(i) for i in range(300)))


async def test_onnx_rows_from_many_threads(grpc_address: str) -> None:
    """Several sync channels at once, each with its own connection, on the demo forest."""
    rows = np.random.default_rng(0).normal(size=(3, 20)).astype("<f4")
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with grpc.insecure_channel(grpc_address) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for _ in range(20):
                    request = pb.ModelInferRequest(model_name="demo")
                    request.inputs.add(name="input", datatype="FP32", shape=[3, 20])
                    request.raw_input_contents.append(rows.tobytes())
                    assert outputs_of(stub.ModelInfer(request))["label"].shape == (3,)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]

    def run() -> None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await asyncio.to_thread(run)
    assert failures == []


async def test_health_watch_sees_changes(
    grpc_address: str, dataplane: DataPlane, monkeypatch: Any
) -> None:
    monkeypatch.setattr(v2_grpc, "HEALTH_POLL_SECONDS", 0.01)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        status = health_pb2.HealthCheckResponse
        assert (await watch.read()).status == status.SERVING
        monkeypatch.setattr(dataplane, "ready", lambda: False)
        assert (await watch.read()).status == status.NOT_SERVING
        monkeypatch.setattr(dataplane, "ready", lambda: True)
        assert (await watch.read()).status == status.SERVING
        watch.cancel()
