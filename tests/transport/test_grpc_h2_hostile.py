"""The native gRPC server against hostile and broken clients, over raw sockets.

Each test sends frames a real client would not and checks the exact HTTP/2 or
gRPC error that comes back, that nothing raised in the event loop, and that the
server still answers a normal request on a new connection afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.dataplane import DataPlane
from inferline.transport.grpc_h2 import frames as f
from inferline.transport.grpc_h2.frames import ErrorCode
from tests.protocols.grpc_servers import start_server
from tests.transport.h2_client import RawClient, frame, grpc_message, request_headers

CHECK = health_pb2.HealthCheckRequest(service="").SerializeToString()
STATUS = "grpc-status"


@pytest.fixture(autouse=True)
async def no_loop_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Nothing may reach the loop's exception handler or the server's error log."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: seen.append(context))
    with caplog.at_level(logging.ERROR, logger="inferline.transport.grpc_h2"):
        yield
    loop.set_exception_handler(None)
    assert seen == []
    assert [r for r in caplog.records if r.name.startswith("inferline.transport.grpc_h2")] == []


async def start(dataplane: DataPlane, **limits: Any) -> tuple[Any, str]:
    return await start_server(dataplane, dataplane.settings, "native", **limits)


@pytest.fixture
async def native(dataplane: DataPlane) -> AsyncIterator[tuple[Any, str]]:
    server, address = await start(dataplane)
    yield server, address
    await server.stop(None)


@pytest.fixture
def address(native: tuple[Any, str]) -> str:
    return native[1]


async def still_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def connection_error(address: str, data: bytes, *, preface: bool = True) -> int:
    client = await RawClient.connect(address, preface=preface)
    client.send(data)
    _, code = await client.goaway()
    await client.close()
    await still_serving(address)
    return code


async def stream_reset(client: RawClient, stream_id: int) -> int:
    got = await client.read_until(f.RST_STREAM, stream_id)
    return int(struct.unpack(">I", got.payload)[0])


# -- connection errors -----------------------------------------------------------------
async def test_bad_preface_is_a_protocol_error(address: str) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await connection_error(address, request, preface=False) == ErrorCode.PROTOCOL_ERROR


async def test_garbage_after_the_preface_is_a_protocol_error(address: str) -> None:
    # A first frame that is not SETTINGS (here: 9 bytes of noise read as a frame header).
    client = await RawClient.connect(address, preface=False)
    client.send(f.PREFACE + b"\x00\x00\x00\x07\xff\x00\x00\x00\x00")
    assert (await client.goaway())[1] == ErrorCode.PROTOCOL_ERROR
    await client.close()
    await still_serving(address)


async def test_frame_over_max_frame_size(address: str) -> None:
    too_big = frame(f.DATA, 0, 1, b"\0" * (64 * 1024 + 1))
    assert await connection_error(address, too_big) == ErrorCode.FRAME_SIZE_ERROR


async def test_continuation_flood_is_refused(address: str) -> None:
    client = await RawClient.connect(address)
    block = client.encoder.encode(request_headers())
    flood = frame(f.HEADERS, 0, 1, block[:3]) + frame(f.CONTINUATION, 0, 1, b"") * 100
    client.send(flood)
    assert (await client.goaway())[1] == ErrorCode.ENHANCE_YOUR_CALM
    await client.close()
    await still_serving(address)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\xff\x80\x01", id="index-out-of-range"),  # indexed 127 + 128
        pytest.param(b"\x80", id="index-zero"),
        pytest.param(b"\x00\x81\xff\x01a", id="bad-huffman"),  # name: Huffman 0xff (EOS prefix)
        pytest.param(b"\xff" + b"\xff" * 10, id="integer-overflow"),
        pytest.param(b"\x7f", id="truncated-integer"),
        pytest.param(b"\x00\x05ab", id="string-past-the-end"),
        pytest.param(b"\x83\x3f\xe1\x1f", id="table-size-update-late"),
        pytest.param(b"\x3f\xe1\xff\x03", id="table-size-over-limit"),
    ],
)
async def test_bad_hpack_is_a_compression_error(address: str, block: bytes) -> None:
    data = frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, block)
    assert await connection_error(address, data) == ErrorCode.COMPRESSION_ERROR


async def test_window_overflow_is_a_flow_control_error(address: str) -> None:
    overflow = frame(f.WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1))
    assert await connection_error(address, overflow) == ErrorCode.FLOW_CONTROL_ERROR


async def test_data_on_an_idle_stream_is_a_protocol_error(address: str) -> None:
    assert await connection_error(address, frame(f.DATA, 0, 7, b"x")) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(f.PING, 0, 0, b"1234"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(f.SETTINGS, 0, 0, b"\0" * 5), ErrorCode.FRAME_SIZE_ERROR),
        (frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.MAX_FRAME_SIZE, 10)), 1),
        (frame(f.SETTINGS, 0, 0, struct.pack(">HI", f.INITIAL_WINDOW_SIZE, 2**31)), 3),
        (frame(f.RST_STREAM, 0, 9, b"\0\0\0\0"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\0\0\0\2"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.HEADERS, f.END_HEADERS, 2, b"\x83"), ErrorCode.PROTOCOL_ERROR),
    ],
    ids=[
        "short-ping",
        "settings-length",
        "max-frame-size",
        "initial-window",
        "rst-idle",
        "zero-window-update",
        "push-promise",
        "even-stream",
    ],
)
async def test_malformed_control_frames(address: str, data: bytes, code: int) -> None:
    assert await connection_error(address, data) == code


def connection_credits(client: RawClient) -> int:
    """The connection-window credit the server has given so far."""
    updates = [x for x in client.frames if x.kind == f.WINDOW_UPDATE and not x.stream_id]
    return sum(struct.unpack(">I", x.payload)[0] for x in updates)


async def test_buffered_bytes_are_bounded_and_the_window_enforced(dataplane: DataPlane) -> None:
    """Past ``max_message + conn_window`` buffered bytes the connection window is no longer
    replenished, and a client that sends past it anyway gets FLOW_CONTROL_ERROR."""
    small = dataplane.settings.model_copy(update={"grpc_max_message_bytes": 1024})
    server, address = await start_server(dataplane, small, "native", conn_window=65_535)
    partial = struct.pack(">BI", 0, 1019) + b"\0" * 995  # 1000 of a message's 1024 bytes
    try:
        client = await RawClient.connect(address)
        for stream_id in range(1, 141, 2):  # 70 open streams, 70,000 bytes
            client.headers(stream_id, request_headers())
            client.data(stream_id, partial, end_stream=False)
            if stream_id == 119:  # 60,000 sent: wait for the server to have read them
                client.send(frame(f.PING, 0, 0, b"60000---"))
                await client.read_until(f.PING)
        client.send(frame(f.PING, 0, 0, b"70000---"))
        await client.read_until(f.PING)
        while client.frames[-1].payload != b"70000---":
            await client.read_until(f.PING)
        credits = connection_credits(client)
        assert 0 < credits <= 1024 + 65_535  # never credited past the cap
        window = 65_535 + credits - 70 * 1000
        stream_id = 141
        while window >= 1000:  # use up the rest of the window: legal, but no credit comes
            client.headers(stream_id, request_headers())
            client.data(stream_id, partial, end_stream=False)
            window, stream_id = window - 1000, stream_id + 2
        client.send(frame(f.PING, 0, 0, b"all-sent"))
        while (await client.read_until(f.PING)).payload != b"all-sent":
            pass
        assert connection_credits(client) == credits
        client.headers(stream_id, request_headers())
        client.data(stream_id, b"\0" * (window + 1), end_stream=False)  # one byte over
        assert (await client.goaway())[1] == ErrorCode.FLOW_CONTROL_ERROR
        await client.close()
        await still_serving(address)
    finally:
        await server.stop(None)


# -- stream errors: the connection goes on ---------------------------------------------
async def test_headers_over_the_list_size_get_431(address: str) -> None:
    client = await RawClient.connect(address)
    headers = request_headers(extra=[("x-big", "v" * 12_000), ("x-big2", "w" * 12_000)])
    block = client.encoder.encode(headers, huffman=False)
    half = len(block) // 2
    client.send(
        frame(f.HEADERS, 0, 1, block[:half]) + frame(f.CONTINUATION, f.END_HEADERS, 1, block[half:])
    )
    _, _, trailers = await client.response(1)
    assert trailers[":status"] == "431"
    # Same connection, next stream: HPACK state stayed in step.
    client.headers(3, request_headers())
    client.data(3, grpc_message(CHECK))
    _, body, trailers = await client.response(3)
    assert (
        trailers[STATUS] == "0"
        and body[5:] == health_pb2.HealthCheckResponse(status=1).SerializeToString()
    )
    await client.close()
    await still_serving(address)


async def test_data_on_a_closed_stream_is_stream_closed(address: str) -> None:
    client = await RawClient.connect(address)
    client.headers(1, request_headers())
    client.data(1, grpc_message(CHECK))
    _, _, trailers = await client.response(1)
    assert trailers[STATUS] == "0"
    client.data(1, b"late")
    assert await stream_reset(client, 1) == ErrorCode.STREAM_CLOSED
    await client.close()
    await still_serving(address)


async def test_too_many_concurrent_streams_are_refused(dataplane: DataPlane) -> None:
    server, address = await start(dataplane, max_concurrent_streams=2)
    try:
        client = await RawClient.connect(address)
        for stream_id in (1, 3, 5):
            client.headers(stream_id, request_headers())  # no END_STREAM: they stay open
        assert await stream_reset(client, 5) == ErrorCode.REFUSED_STREAM
        client.data(1, grpc_message(CHECK))
        _, _, trailers = await client.response(1)
        assert trailers[STATUS] == "0"
        await client.close()
        await still_serving(address)
    finally:
        await server.stop(None)


async def test_oversized_message_is_resource_exhausted_before_it_arrives(
    dataplane: DataPlane,
) -> None:
    small = dataplane.settings.model_copy(update={"grpc_max_message_bytes": 1024})
    server, address = await start_server(dataplane, small, "native")
    try:
        client = await RawClient.connect(address)
        client.headers(1, request_headers())
        client.data(1, struct.pack(">BI", 0, 10_000_000) + b"\0" * 100, end_stream=False)
        headers, _, trailers = await client.response(1)
        assert headers == {} and trailers[STATUS] == "8"
        assert "larger than max (10000000 vs. 1024)" in trailers["grpc-message"]
        assert await stream_reset(client, 1) == ErrorCode.NO_ERROR  # stop sending, politely
        await client.close()
        await still_serving(address)
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (struct.pack(">BI", 0, 50) + b"\0" * 20, "13", "not one complete message"),
        (grpc_message(CHECK) + grpc_message(CHECK), "13", "more than one request message"),
        (b"", "13", "not one complete message"),
        (grpc_message(CHECK, compressed=True), "13", "compressed message without grpc-encoding"),
        (grpc_message(b"\xff\xff"), "3", "request is not a valid message"),
    ],
    ids=["truncated", "two-messages", "no-message", "compressed-identity", "not-protobuf"],
)
async def test_bad_messages_get_grpc_errors(
    address: str, body: bytes, code: str, message: str
) -> None:
    client = await RawClient.connect(address)
    client.headers(1, request_headers(), end_stream=not body)
    if body:
        client.data(1, body)
    _, _, trailers = await client.response(1)
    assert trailers[STATUS] == code and message in trailers["grpc-message"], trailers
    assert len(trailers["x-request-id"]) == 32
    await client.close()
    await still_serving(address)


@pytest.mark.parametrize(
    ("headers", "status", "grpc_status"),
    [
        (request_headers(content_type="text/plain"), "415", "13"),
        (request_headers(path="/nope.Service/Nope"), "200", "12"),
        ([(":method", "GET"), *request_headers()[1:]], "405", "13"),
        (request_headers(extra=[("grpc-encoding", "snappy")]), "200", "12"),
        (request_headers(extra=[("grpc-timeout", "soon")]), "200", "13"),
    ],
    ids=["content-type", "unknown-method", "get", "encoding", "bad-timeout"],
)
async def test_requests_that_are_not_grpc(
    address: str, headers: list[tuple[str, str]], status: str, grpc_status: str
) -> None:
    client = await RawClient.connect(address)
    client.headers(1, headers)
    _, _, trailers = await client.response(1)
    assert (trailers[":status"], trailers[STATUS]) == (status, grpc_status), trailers
    await client.close()
    await still_serving(address)


async def test_malformed_request_headers_are_a_stream_protocol_error(address: str) -> None:
    client = await RawClient.connect(address)
    client.headers(1, [("content-type", "application/grpc"), (":path", "/x")])
    assert await stream_reset(client, 1) == ErrorCode.PROTOCOL_ERROR
    client.headers(3, [*request_headers(), ("connection", "close")])
    assert await stream_reset(client, 3) == ErrorCode.PROTOCOL_ERROR
    await client.close()
    await still_serving(address)


async def test_client_disconnecting_mid_request(native: tuple[Any, str]) -> None:
    server, address = native
    client = await RawClient.connect(address)
    client.headers(1, request_headers())
    client.data(1, struct.pack(">BI", 0, 100) + b"\0" * 10, end_stream=False)
    await client.read_until(f.SETTINGS)
    await client.close()
    for _ in range(500):
        if not server._connections:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the server kept the dead connection")
    await still_serving(address)


# -- what a well-behaved peer may do ---------------------------------------------------
async def test_ping_priority_padding_and_unknown_frames(address: str) -> None:
    client = await RawClient.connect(address)
    client.send(frame(f.PING, 0, 0, b"12345678"))
    client.send(frame(0x42, 0xFF, 0, b"unknown frame types are ignored"))
    client.send(frame(f.PRIORITY, 0, 1, b"\0\0\0\0\x10"))
    block = client.encoder.encode(request_headers())
    padded = bytes((4,)) + b"\0\0\0\0\x10" + block + b"\0" * 4  # pad length, priority, pad
    client.send(frame(f.HEADERS, f.END_HEADERS | f.PADDED | f.PRIORITY_FLAG, 1, padded))
    message = grpc_message(CHECK)
    client.send(frame(f.DATA, f.END_STREAM | f.PADDED, 1, bytes((3,)) + message + b"\0" * 3))
    ping = await client.read_until(f.PING)
    assert (ping.flags, ping.payload) == (f.ACK, b"12345678")
    _, body, trailers = await client.response(1)
    assert trailers[STATUS] == "0"
    assert health_pb2.HealthCheckResponse.FromString(body[5:]).status == 1
    await client.close()


async def test_send_side_flow_control_waits_for_window_updates(address: str) -> None:
    settings = f.settings({f.INITIAL_WINDOW_SIZE: 3})
    client = await RawClient.connect(address, settings=settings)
    client.headers(1, request_headers(path="/grpc.health.v1.Health/List"))
    client.data(1, grpc_message(b""))
    first = await client.read_until(f.DATA, 1)
    assert len(first.payload) == 3  # no more than the stream window
    client.send(frame(f.WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))
    _, rest, trailers = await client.response(1)
    listed = health_pb2.HealthListResponse.FromString((first.payload + rest)[5:])
    assert set(listed.statuses) == {"", "inference.GRPCInferenceService"}
    assert trailers[STATUS] == "0"
    await client.close()


async def test_graceful_stop_sends_goaway_and_lets_streams_finish(dataplane: DataPlane) -> None:
    server, address = await start(dataplane)
    client = await RawClient.connect(address)
    client.headers(1, request_headers())
    await client.read_until(f.SETTINGS)
    stopping = asyncio.ensure_future(server.stop(5))
    goaway = await client.read_until(f.GOAWAY)
    assert struct.unpack(">II", goaway.payload[:8]) == (1, ErrorCode.NO_ERROR)
    client.data(1, grpc_message(CHECK))  # the open stream still gets its answer
    _, _, trailers = await client.response(1)
    assert trailers[STATUS] == "0"
    await stopping
    assert await client.read_frame() is None
    await client.close()


async def test_long_trailers_come_back_in_continuation_frames(address: str) -> None:
    """An error whose trailers outgrow one frame: the percent-encoded message and the id."""
    path, request_id = "/x/" + "%" * 8_000, "r" * 7_000
    client = await RawClient.connect(address)
    client.headers(1, request_headers(path=path, extra=[("x-request-id", request_id)]))
    _, _, trailers = await client.response(1)
    assert trailers[STATUS] == "12" and trailers["x-request-id"] == request_id
    assert trailers["grpc-message"].startswith("unknown method /x/%25%25")
    assert any(x.kind == f.CONTINUATION for x in client.frames)
    client.headers(3, request_headers(extra=[("x-request-id", request_id * 2)]))
    client.data(3, grpc_message(CHECK))
    _, _, trailers = await client.response(3)
    assert trailers[STATUS] == "0" and trailers["x-request-id"] == request_id * 2
    await client.close()
