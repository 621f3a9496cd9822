"""HTTP/1.1 against slow and numerous clients: the request-head timeout and the
connection cap (issue #13). uvicorn's own protocol has neither: a connection that
never completes a request head stays open, and at the fd limit new ones are dropped.
"""

from __future__ import annotations

import asyncio

from inferline.settings import ConnectionLimits
from inferline.transport.http1 import HttpProtocol
from tests.transport.http1_server import (
    Http1Server,
    complete,
    parse_answers,
    poll,
    read_to_eof,
    read_until,
)

GET = b"GET /small HTTP/1.1\r\nhost: x\r\n\r\n"


def limited(**limits: float) -> type[HttpProtocol]:
    return HttpProtocol.configured(ConnectionLimits(**limits))


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with Http1Server(limited(head_timeout=0.1)) as server:
        reader, _ = await server.connect()
        assert await read_to_eof(reader) == b""
        await poll(lambda: server.connections == 0, "the server to drop the connection")


async def test_a_head_that_never_completes_gets_408() -> None:
    async with Http1Server(limited(head_timeout=0.1)) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /small HTTP/1.1\r\nhost: x\r\n")  # no blank line: never ends
        answers, _ = parse_answers(await read_to_eof(reader))
        assert [a.status for a in answers] == [408]


async def test_a_slow_head_after_a_kept_alive_request_gets_408() -> None:
    async with Http1Server(limited(head_timeout=0.1)) as server:
        reader, writer = await server.connect()
        writer.write(GET)
        await read_until(reader, complete(1))
        writer.write(b"GET /small HTTP/1.1\r\n")
        answers, _ = parse_answers(await read_to_eof(reader))
        assert [a.status for a in answers] == [408]


async def test_a_slow_answer_is_not_a_slow_head() -> None:
    """The timeout is for the client's head, not for the app's answer."""
    async with Http1Server(limited(head_timeout=0.05)) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        assert await server.app.events.get() == ("entered", "/slow")
        for _ in range(30):  # several head periods pass while the app works
            await asyncio.sleep(0.01)
        server.app.gate.set()
        answers, _ = parse_answers(await read_until(reader, complete(1)))
        assert [a.status for a in answers] == [200]


async def test_connections_past_the_cap_get_503() -> None:
    async with Http1Server(limited(max_connections=2)) as server:
        held = [await server.connect() for _ in range(2)]
        await poll(lambda: server.connections == 2, "two connections")
        reader, writer = await server.connect()
        writer.write(GET)
        answers, _ = parse_answers(await read_to_eof(reader))
        assert [a.status for a in answers] == [503]
        assert server.connections == 2
        held[0][1].close()
        await poll(lambda: server.connections == 1, "the server to see the close")
        reader, writer = await server.connect()
        writer.write(GET)
        answers, _ = parse_answers(await read_until(reader, complete(1)))
        assert [a.status for a in answers] == [200]
