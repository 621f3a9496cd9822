"""The coalescing httptools protocol: same bytes as uvicorn's, fewer writes.

A real uvicorn server on a loopback port in the test's loop, once with uvicorn's
own protocol and once with inferline's, and a raw socket client, so what is
compared is exactly what goes over the wire (the harness: ``http1_server.py``;
the rest of the behaviour: ``test_http1_conformance.py``).
"""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferline.transport.http1 import HttpProtocol
from tests.transport.http1_server import Http1Server as _Server
from tests.transport.http1_server import complete as _complete
from tests.transport.http1_server import exchange as _exchange
from tests.transport.http1_server import without_date as _without_date

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
    for protocol in (HttpToolsProtocol, HttpProtocol):
        async with _Server(protocol) as server:
            answers.append(_without_date(await _exchange(server.port, raw, _complete(count))))
            writes.append(list(server.writes))
    assert answers[0] == answers[1]
    assert _complete(count)(answers[1])
    assert len(writes[0]) == 2 * count  # uvicorn: the head, then the body
    assert len(writes[1]) == count  # here: one write per response
    assert sum(writes[0]) == sum(writes[1])


async def test_head_requests_answer_the_head_alone() -> None:
    async with _Server(HttpProtocol) as server:
        raw = b"HEAD /small HTTP/1.1\r\nhost: x\r\n\r\n"
        answer = await _exchange(server.port, raw, lambda d: d.endswith(b"\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
        assert server.writes == [len(answer)]


async def test_a_streamed_response_head_is_not_held_back() -> None:
    async with _Server(HttpProtocol) as server:
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
    async with _Server(HttpProtocol) as server:
        answer = await _exchange(
            server.port, b"GET /head-then-fail HTTP/1.1\r\nhost: x\r\n\r\n", lambda _: False
        )
        # The head alone would promise 5 bytes that never come; the client sees a close.
        assert answer == b""
        # and the server goes on answering
        ok = await _exchange(server.port, REQUESTS["get"], _complete(1))
        assert ok.startswith(b"HTTP/1.1 200 OK")
