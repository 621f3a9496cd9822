"""The coalescing httptools protocol: same bytes as uvicorn's, fewer writes.

A real uvicorn server on a loopback port in the test's loop, once with uvicorn's
own protocol and once with inferline's, and a raw socket client, so what is
compared is exactly what goes over the wire.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferline.protocols.http1 import CoalescingHttpToolsProtocol

#: Chunks the streaming route may send: the test releases each one.
release = asyncio.Queue[bytes]


def _app(chunks: release) -> Starlette:
    async def small(request: Request) -> Response:
        body = await request.body()
        return Response(b'{"echo":' + str(len(body)).encode() + b"}", media_type="text/plain")

    async def stream(_: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            while (chunk := await chunks.get()) != b"":
                yield chunk

        return StreamingResponse(parts(), media_type="text/plain")

    async def broken(_: Request) -> Response:
        raise RuntimeError("the app fails")

    class HeadThenFail:  # a raw ASGI app (Starlette routes a class instance as one)
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            head = [(b"content-length", b"5")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            raise RuntimeError("after the head")

    app = Starlette(
        routes=[
            Route("/small", small, methods=["GET", "POST", "HEAD"]),
            Route("/stream", stream),
            Route("/broken", broken),
        ]
    )
    app.router.routes.append(Route("/head-then-fail", HeadThenFail()))
    return app


class _Counting:
    """The real transport, counting writes."""

    def __init__(self, transport: Any, counts: list[int]) -> None:
        self._transport = transport
        self._counts = counts

    def write(self, data: bytes) -> None:
        self._counts.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _counting(base: type[HttpToolsProtocol], counts: list[int]) -> type[HttpToolsProtocol]:
    class Counted(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(_Counting(transport, counts))

    return Counted


class _Server:
    def __init__(self, protocol: Any) -> None:
        self.writes: list[int] = []
        self.chunks: release = asyncio.Queue()
        config = uvicorn.Config(
            _app(self.chunks),
            host="127.0.0.1",
            port=0,
            http=_counting(protocol, self.writes),
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    async def __aenter__(self) -> _Server:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started:
                return self
            await asyncio.sleep(0.01)
        pytest.fail("uvicorn did not start")

    async def __aexit__(self, *_: Any) -> None:
        self.chunks.put_nowait(b"")  # ends a stream a failed test left open
        self.server.should_exit = self.server.force_exit = True
        await self.task


async def _exchange(port: int, raw: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Send ``raw`` and read until ``until(received)`` or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    received = b""
    try:
        while not until(received):
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            received += data
    finally:
        writer.close()
    return received


def _without_date(response: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", response)


def _complete(count: int) -> Callable[[bytes], bool]:
    """Received ``count`` fixed-length responses."""

    def done(data: bytes) -> bool:
        found, rest = 0, data
        while (end := rest.find(b"\r\n\r\n")) >= 0:
            head = rest[:end]
            length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if len(rest) < end + 4 + length:
                break
            rest, found = rest[end + 4 + length :], found + 1
        return found >= count

    return done


REQUESTS = {
    "get": b"GET /small HTTP/1.1\r\nhost: x\r\n\r\n",
    "post": b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc",
    "not found": b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n",
    "app error": b"GET /broken HTTP/1.1\r\nhost: x\r\n\r\n",
    "http/1.0 closes": b"GET /small HTTP/1.0\r\n\r\n",
    "pipelined": b"GET /small HTTP/1.1\r\nhost: x\r\n\r\n"
    b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab",
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_same_bytes_as_uvicorns_protocol_in_one_write_per_response(name: str) -> None:
    raw = REQUESTS[name]
    count = 2 if name == "pipelined" else 1
    answers, writes = [], []
    for protocol in (HttpToolsProtocol, CoalescingHttpToolsProtocol):
        async with _Server(protocol) as server:
            answers.append(_without_date(await _exchange(server.port, raw, _complete(count))))
            writes.append(list(server.writes))
    assert answers[0] == answers[1]
    assert _complete(count)(answers[1])
    assert len(writes[0]) == 2 * count  # uvicorn: the head, then the body
    assert len(writes[1]) == count  # here: one write per response
    assert sum(writes[0]) == sum(writes[1])


async def test_head_requests_answer_the_head_alone() -> None:
    async with _Server(CoalescingHttpToolsProtocol) as server:
        raw = b"HEAD /small HTTP/1.1\r\nhost: x\r\n\r\n"
        answer = await _exchange(server.port, raw, lambda d: d.endswith(b"\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
        assert server.writes == [len(answer)]


async def test_a_streamed_response_head_is_not_held_back() -> None:
    async with _Server(CoalescingHttpToolsProtocol) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # before any chunk
        assert b"transfer-encoding: chunked" in head
        await server.chunks.put(b"first")
        assert await asyncio.wait_for(reader.readuntil(b"first\r\n"), 10) == b"5\r\nfirst\r\n"
        await server.chunks.put(b"")
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10) == b"0\r\n\r\n"
        writer.close()


async def test_an_app_failing_after_its_head_closes_the_connection() -> None:
    async with _Server(CoalescingHttpToolsProtocol) as server:
        answer = await _exchange(
            server.port, b"GET /head-then-fail HTTP/1.1\r\nhost: x\r\n\r\n", lambda _: False
        )
        # The head alone would promise 5 bytes that never come; the client sees a close.
        assert answer == b""
        # and the server goes on answering
        ok = await _exchange(server.port, REQUESTS["get"], _complete(1))
        assert ok.startswith(b"HTTP/1.1 200 OK")
