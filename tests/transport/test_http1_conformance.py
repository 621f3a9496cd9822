"""inferline's HTTP/1.1 protocol against uvicorn's ``HttpToolsProtocol``, on the wire.

Each scenario runs on a real uvicorn server (``http1_server.py``) once with
uvicorn's protocol, the reference, and once with inferline's; the bytes the
client receives (less the ``date`` header) must be the same. Where inferline
deliberately differs (the 431 bound on a request head, a held head dropped when
the app fails), the test says so and checks inferline's bytes exactly.

Stateless scenarios share one server per protocol for the module (a server takes
a fifth of a second to start and stop); the others start their own. No test
times anything: waits are bounded polls that fail the test when spent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from inferline.transport.http1 import MAX_HEAD_BYTES, HttpProtocol
from tests.transport.http1_server import (
    BIG,
    PROTOCOLS,
    STREAM_PART,
    STREAM_PARTS,
    ConformanceApp,
    Http1Server,
    complete,
    on_both,
    parse_answers,
    poll,
    read_to_eof,
    read_until,
    without_date,
)

FOLLOW_UP = b"GET /echo/again HTTP/1.1\r\nhost: x\r\n\r\n"
T = TypeVar("T")
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[tuple[Http1Server, Http1Server]]:
    """One server with uvicorn's protocol and one with inferline's, for the module."""
    async with (
        Http1Server(PROTOCOLS["uvicorn"]) as reference,
        Http1Server(HttpProtocol) as server,
    ):
        yield reference, server


async def _on_shared(
    servers: tuple[Http1Server, Http1Server], scenario: Callable[[Http1Server], Awaitable[T]]
) -> tuple[T, T]:
    return await scenario(servers[0]), await scenario(servers[1])


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of uvicorn's error logger and asyncio's, wherever other tests sent them."""
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was logged (first lines, once each), to compare across protocols."""
    seen: dict[str, None] = {}
    for record in caplog.records:
        if record.name == "uvicorn.error" and record.levelno >= logging.WARNING:
            seen[record.getMessage().splitlines()[0]] = None
    return list(seen)


async def _still_serving(server: Http1Server) -> None:
    reader, writer = await server.connect()
    writer.write(FOLLOW_UP)
    answers, _ = parse_answers(await read_until(reader, complete(1)))
    writer.close()
    assert answers[0].status == 200


async def _talk(server: Http1Server, raw: bytes, methods: list[str], then: str) -> bytes:
    """Send ``raw``, read the answers to ``methods``; then ``close``: the server must
    close; ``reuse``: a follow-up on the same connection must be answered; ``stop``:
    nothing more."""
    reader, writer = await server.connect()
    writer.write(raw)
    received = await read_until(reader, complete(len(methods), methods))
    if then == "close":
        received += await read_to_eof(reader)
    elif then == "reuse":
        writer.write(FOLLOW_UP)
        before, more = received, complete(len(methods) + 1, [*methods, "GET"])
        received += await read_until(reader, lambda data: more(before + data))
    writer.close()
    return without_date(received)


def _request(
    target: str | bytes,
    method: str = "GET",
    body: bytes | None = None,
    headers: bytes = b"",
    version: bytes = b"1.1",
) -> bytes:
    target = target.encode() if isinstance(target, str) else target
    head = method.encode() + b" " + target + b" HTTP/" + version + b"\r\nhost: x\r\n" + headers
    if body is not None:
        head += b"content-length: " + str(len(body)).encode() + b"\r\n"
    return head + b"\r\n" + (body or b"")


CHUNKED_UPLOAD = (
    b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;name=value\r\n, world\r\n1\r\n!\r\n0\r\n\r\n"
)

#: name: (bytes sent, the methods answered, what follows)
EXCHANGES: dict[str, tuple[bytes, list[str], str]] = {
    "chunked upload": (CHUNKED_UPLOAD, ["POST"], "reuse"),
    "chunked upload with a trailer": (
        CHUNKED_UPLOAD.replace(b"0\r\n\r\n", b"0\r\nx-trailer: t\r\n\r\n"),
        ["POST"],
        "reuse",
    ),
    "1 MB body": (_request("/echo", "POST", bytes(range(256)) * (BIG // 256)), ["POST"], "reuse"),
    "query and percent-encoded path": (
        _request("/echo/%E2%9C%93/a%2Fb%20c?x=1&y=%20z&x=2"),
        ["GET"],
        "reuse",
    ),
    "question marks in the query": (_request("/echo/p?a?b=?"), ["GET"], "reuse"),
    "empty query": (_request("/echo/p?"), ["GET"], "reuse"),
    "fragment": (_request("/echo/p?q=1#frag"), ["GET"], "reuse"),
    "invalid percent escape": (_request("/echo/%zz%2"), ["GET"], "reuse"),
    "double slash": (_request("//echo//p"), ["GET"], "reuse"),
    "absolute form": (_request("http://example.com:8080/echo/p%20q?x=1"), ["GET"], "reuse"),
    "absolute form without a path": (_request("http://example.com"), ["GET"], "close"),
    "asterisk": (_request("*", "OPTIONS"), ["OPTIONS"], "reuse"),
    "lower-case method": (b"get /echo HTTP/1.1\r\nhost: x\r\n\r\n", ["GET"], "close"),
    "non-ascii target": (_request(b"/echo/caf\xc3\xa9"), ["GET"], "close"),
    "no version: HTTP/0.9": (b"GET /echo\r\nhost: x\r\n\r\n", ["GET"], "close"),
    "http/1.0": (_request("/echo", version=b"1.0"), ["GET"], "close"),
    "http/1.0 keep-alive": (
        _request("/echo", headers=b"connection: keep-alive\r\n", version=b"1.0"),
        ["GET"],
        "close",
    ),
    "connection: close": (_request("/echo", headers=b"connection: close\r\n"), ["GET"], "close"),
    "connection: keep-alive, close": (
        _request("/echo", headers=b"Connection: Keep-Alive, Close\r\n"),
        ["GET"],
        "close",
    ),
    "the app says close": (_request("/header?close"), ["GET"], "close"),
    "the app says Keep-Alive, Close": (_request("/header?Keep-Alive,%20Close"), ["GET"], "close"),
    "the app says keep-alive": (_request("/header?keep-alive"), ["GET"], "reuse"),
    "204": (_request("/status?code=204"), ["GET"], "reuse"),
    "304": (_request("/status?code=304"), ["GET"], "reuse"),
    "204 then a pipelined request": (
        _request("/status?code=204") + _request("/echo/next"),
        ["GET", "GET"],
        "reuse",
    ),
    "HEAD": (_request("/echo", "HEAD"), ["HEAD"], "reuse"),
    "HEAD of a stream": (_request("/parts", "HEAD"), ["HEAD"], "reuse"),
    "HEAD through starlette": (_request("/small", "HEAD"), ["HEAD"], "reuse"),
    "HEAD pipelined": (
        _request("/parts", "HEAD") + _request("/parts") + _request("/echo", "HEAD"),
        ["HEAD", "GET", "HEAD"],
        "reuse",
    ),
    "a streamed answer": (_request("/parts", "POST", b"body"), ["POST"], "reuse"),
    "expect 100-continue with the body at once": (
        _request("/echo", "POST", b"abc", b"expect: 100-continue\r\n"),
        ["POST"],
        "reuse",
    ),
    "an upgrade is answered as plain HTTP": (
        _request("/echo", headers=b"connection: upgrade\r\nupgrade: websocket\r\n"),
        ["GET"],
        "stop",
    ),
    "a valid request then garbage": (_request("/echo") + b"GARBAGE\r\n\r\n", ["GET"], "close"),
}
#: the first answer's status, where not 200: the same in uvicorn, which is what is tested
STATUSES = {
    "absolute form without a path": 400,
    "asterisk": 404,
    "lower-case method": 400,
    "non-ascii target": 400,
    "a valid request then garbage": 400,
    "204": 204,
    "304": 304,
    "204 then a pipelined request": 204,
}


@shared_loop
@pytest.mark.parametrize("name", list(EXCHANGES))
async def test_the_same_bytes_as_uvicorn(
    name: str, shared: Any, server_log: pytest.LogCaptureFixture
) -> None:
    raw, methods, then = EXCHANGES[name]

    async def scenario(server: Http1Server) -> tuple[bytes, list[str]]:
        server_log.clear()
        received = await _talk(server, raw, methods, then)
        await _still_serving(server)
        return received, _messages(server_log)

    (reference, logged_reference), (received, logged) = await _on_shared(shared, scenario)
    assert received == reference
    if name == "an upgrade is answered as plain HTTP":
        # uvicorn adds a second warning, about WebSocket libraries
        assert logged == logged_reference[:1] == ["Unsupported upgrade request."]
    else:
        assert logged == logged_reference
    answers, rest = parse_answers(received, [*methods, "GET"])
    assert rest == b""
    final = [a for a in answers if a.status >= 200]
    assert len(final) == len(methods) + (then == "reuse")
    assert final[0].status == STATUSES.get(name, 200)
    if then == "close":
        assert final[-1].header(b"connection") is not None


async def test_the_request_as_the_app_sees_it() -> None:
    """What uvicorn and inferline agree on, spelled out."""
    async with Http1Server(HttpProtocol, root_path="/api") as server:
        raw = _request("/echo/%E2%9C%93/a%2Fb?x=%20y") + _request("http://h:1/echo/abs?q")
        received = await _talk(server, raw, ["GET", "GET"], "stop")
    first, second = (a.body for a in parse_answers(received)[0])
    assert b'"path": "/api/echo/\\u2713/a/b"' in first
    assert b'"raw_path": "/api/echo/%E2%9C%93/a%2Fb"' in first
    assert b'"query_string": "x=%20y"' in first
    assert b'"root_path": "/api"' in first
    assert b'"path": "/api/echo/abs", ' in second and b'"query_string": "q"' in second


@pytest.mark.parametrize(
    "target", ["/echo/x?y=1", "/echo/%7Eu%20v?w", "http://example.com/echo/abs?q=1"]
)
async def test_root_path_as_uvicorn(target: str) -> None:
    async def scenario(server: Http1Server) -> bytes:
        return await _talk(server, _request(target), ["GET"], "reuse")

    reference, received = await on_both(scenario, root_path="/api/v1")
    assert received == reference
    assert b'"root_path": "/api/v1"' in received


@shared_loop
async def test_a_large_answer_leaves_in_one_call(shared: Any) -> None:
    """Over 64 KiB, head and body go out by one writelines, not copied together."""
    writes = []

    async def scenario(server: Http1Server) -> bytes:
        before = len(server.writes)
        received = await _talk(server, _request("/big"), ["GET"], "stop")
        writes.append(server.writes[before:])
        return received

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    assert len(parse_answers(received)[0][0].body) == BIG
    assert len(writes[0]) == 2 and len(writes[1]) == 1  # uvicorn: head, body; here: one call
    assert sum(writes[0]) == sum(writes[1])


@shared_loop
async def test_fifty_pipelined_requests_in_one_write(shared: Any) -> None:
    raw = b"".join(
        _request(f"/echo/{i}?i={i}", *(("POST", b"x" * i) if i % 3 else ("GET",)))
        for i in range(50)
    )
    methods = ["POST" if i % 3 else "GET" for i in range(50)]
    writes = []

    async def scenario(server: Http1Server) -> bytes:
        before = len(server.writes)
        received = await _talk(server, raw, methods, "reuse")
        writes.append(len(server.writes) - before)
        return received

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    answers, _ = parse_answers(received, methods)
    assert [b'"path": "/echo/%d"' % i in a.body for i, a in enumerate(answers[:50])] == [True] * 50
    assert writes == [102, 51]  # one write per answer here, two in uvicorn


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_pipelined_requests_wait_unread_behind_an_answer(protocol: str) -> None:
    """The server stops reading once it holds the head of a request pipelined behind
    one still being answered, rather than reading (and queueing) all that comes."""
    padding = b"x-padding: " + b"p" * 4000 + b"\r\n"
    pipelined = b"".join(_request(f"/echo/{i}", headers=padding) for i in range(256))  # 1 MiB
    async with Http1Server(PROTOCOLS[protocol]) as server:
        reader, writer = await server.connect()
        writer.write(_request("/slow"))
        await server.app.next_event("entered")
        writer.write(pipelined)
        await poll(lambda: server.stats.pause_reading > 0, "the server to pause reading")
        for _ in range(20):  # let the server read on, if it would
            await asyncio.sleep(0.01)
        assert server.stats.bytes_received < len(pipelined)  # the rest waits in the socket
        server.app.gate.set()
        received = await read_until(reader, complete(257))
        writer.close()
    answers, rest = parse_answers(received)
    assert rest == b""
    assert [b'"path": "/echo/%d"' % i in a.body for i, a in enumerate(answers[1:])] == [True] * 256


@shared_loop
async def test_requests_split_byte_by_byte(shared: Any) -> None:
    raw = (
        _request("/echo/a?b=c", "POST", b"0123456789")
        + CHUNKED_UPLOAD
        + _request("/parts", "HEAD")
        + _request("/echo/last", headers=b"connection: close\r\n")
    )
    methods = ["POST", "POST", "HEAD", "GET"]

    async def scenario(server: Http1Server) -> tuple[bytes, bytes]:
        whole = await _talk(server, raw, methods, "close")
        reader, writer = await server.connect()
        reads = server.stats.data_received
        for i in range(len(raw)):
            writer.write(raw[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        split = without_date(await read_to_eof(reader))
        writer.close()
        assert server.stats.data_received - reads > len(raw) // 4  # it did arrive in pieces
        return whole, split

    (reference, reference_split), (whole, split) = await _on_shared(shared, scenario)
    assert whole == reference == split == reference_split
    assert len(parse_answers(whole, methods)[0]) == 4


# flow control


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_large_upload_pauses_reading_until_the_app_reads(protocol: str) -> None:
    body = bytes(range(256)) * (BIG // 256)
    async with Http1Server(PROTOCOLS[protocol]) as server:
        reader, writer = await server.connect()
        writer.write(_request("/upload-slow", "POST", body))
        await server.app.next_event("entered")
        await poll(lambda: server.stats.pause_reading > 0, "the server to pause reading")
        server.app.gate.set()
        sizes = await server.app.next_event("sizes")
        received = await read_until(reader, complete(1))
        writer.close()
    assert sum(sizes) == BIG
    # At most the high-water mark and one read's worth were taken in before the pause.
    assert sizes[0] <= 64 * 1024 + 256 * 1024
    assert b'"length": %d' % BIG in parse_answers(received)[0][0].body


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_large_stream_waits_while_the_client_does_not_read(protocol: str) -> None:
    async with Http1Server(PROTOCOLS[protocol]) as server:
        reader, writer = await server.connect()
        writer.write(_request("/big-stream"))
        await poll(lambda: server.stats.pause_writing > 0, "the transport to pause writing")
        for _ in range(20):  # let the app run on, if it would
            await asyncio.sleep(0.01)
        assert server.app.sent < STREAM_PARTS  # the app waits in send() for the client
        received = await read_until(reader, lambda data: data.endswith(b"\r\n0\r\n\r\n"))
        writer.close()
    assert len(parse_answers(received)[0][0].body) == STREAM_PARTS * STREAM_PART
    assert server.app.sent == STREAM_PARTS


# Expect: 100-continue


@shared_loop
async def test_100_continue_comes_when_the_app_reads(shared: Any) -> None:
    async def scenario(server: Http1Server) -> bytes:
        reader, writer = await server.connect()
        writer.write(
            b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n"
        )
        interim = await read_until(reader, lambda data: b"\r\n\r\n" in data)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await read_until(reader, complete(1, ["POST"]))
        writer.close()
        return without_date(interim + final)

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    assert b'"length": 5' in received


@shared_loop
async def test_no_100_continue_when_the_app_answers_without_reading(shared: Any) -> None:
    async def scenario(server: Http1Server) -> bytes:
        raw = b"POST /status?code=417 HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        return await _talk(server, raw + b"content-length: 5\r\n\r\n", ["POST"], "stop")

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    assert received.startswith(b"HTTP/1.1 417 Expectation Failed\r\n")


# hostile and malformed input

MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad version": b"GET /echo HTTP/9.Z\r\nhost: x\r\n\r\n",
    "unknown method": b"BREW /echo HTTP/1.1\r\nhost: x\r\n\r\n",
    "bad header name": b"GET /echo HTTP/1.1\r\nho(st: x\r\n\r\n",
    "space before the colon": b"GET /echo HTTP/1.1\r\nhost : x\r\n\r\n",
    "NUL in a header value": b"GET /echo HTTP/1.1\r\nhost: x\x00y\r\n\r\n",
    "bare LF": b"GET /echo HTTP/1.1\nhost: x\n\n",
    "bad content-length": b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
    "negative content-length": b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
    "two content-lengths": b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n"
    b"content-length: 2\r\n\r\nab",
    "content-length and chunked": b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@shared_loop
@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_requests_as_uvicorn(
    name: str, shared: Any, server_log: pytest.LogCaptureFixture
) -> None:
    async def scenario(server: Http1Server) -> tuple[bytes, list[str]]:
        server_log.clear()
        reader, writer = await server.connect()
        writer.write(MALFORMED[name])
        received = without_date(await read_to_eof(reader))
        writer.close()
        await _still_serving(server)
        assert _errors(server_log) == []
        return received, _messages(server_log)

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    assert received[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert received[0].endswith(b"connection: close\r\n\r\nInvalid HTTP request received.")
    assert received[1] == ["Invalid HTTP request received."]


TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nserver: uvicorn\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 46\r\nconnection: close\r\n"
    b"\r\nRequest line and headers are over %d bytes." % MAX_HEAD_BYTES
)

MANY_HEADERS = b"".join(b"x-header-%05d: %s\r\n" % (i, b"v" * 40) for i in range(2000))


async def _send_in_pieces(
    writer: asyncio.StreamWriter, raw: bytes, done: asyncio.Task[Any]
) -> None:
    """Send ``raw`` 16 KiB at a time until ``done`` (the server answered and closed)."""
    for start in range(0, len(raw), 16 * 1024):
        if done.done():
            return
        try:
            writer.write(raw[start : start + 16 * 1024])
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0)


OVER_THE_LIMIT = {
    "many headers": b"GET /echo HTTP/1.1\r\nhost: x\r\n" + MANY_HEADERS + b"\r\n",
    "a huge URL": b"GET /echo?" + b"q" * MAX_HEAD_BYTES + b" HTTP/1.1\r\nhost: x\r\n\r\n",
    # unfinished: the server must not wait for their end to refuse them
    "an unfinished huge URL": b"GET /echo?" + b"q" * (4 * MAX_HEAD_BYTES),
    "many headers, unfinished": b"GET /echo HTTP/1.1\r\nhost: x\r\n" + MANY_HEADERS,
    "an unfinished huge header value": b"GET /echo HTTP/1.1\r\nhost: x\r\nx-huge: "
    + b"v" * (4 * MAX_HEAD_BYTES),
    "an unfinished huge header name": b"GET /echo HTTP/1.1\r\nhost: x\r\nx-huge"
    + b"n" * (4 * MAX_HEAD_BYTES),
    # after a request in the same write: that one may be answered first
    "a huge pipelined head": _request("/echo")
    + b"GET /echo HTTP/1.1\r\nx-huge: "
    + b"v" * (4 * MAX_HEAD_BYTES),
}


@pytest.mark.parametrize("name", list(OVER_THE_LIMIT))
async def test_a_head_over_the_limit_is_answered_431(
    name: str, server_log: pytest.LogCaptureFixture
) -> None:
    """uvicorn sets no bound (httptools holds what comes); inferline answers 431 and closes."""
    async with Http1Server(HttpProtocol) as server:
        reader, writer = await server.connect()
        received = asyncio.ensure_future(read_to_eof(reader))
        await _send_in_pieces(writer, OVER_THE_LIMIT[name], received)
        answer = without_date(await received)
        writer.close()
        await _still_serving(server)
    assert answer.endswith(TOO_LARGE)
    before = answer[: -len(TOO_LARGE)]
    if before:
        assert name == "a huge pipelined head"
        answers, rest = parse_answers(before)
        assert [a.status for a in answers] == [200] and rest == b""
    assert _errors(server_log) == []
    assert f"Request line and headers are over {MAX_HEAD_BYTES} bytes." in _messages(server_log)


@shared_loop
@pytest.mark.parametrize("piece", [1024, 7, 64 * 1024])
async def test_a_head_under_the_limit_is_served_however_it_arrives(shared: Any, piece: int) -> None:
    headers = b"".join(b"x-h-%04d: %s\r\n" % (i, b"v" * 100) for i in range(500))  # ~55 KiB
    raw = b"GET /echo HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n"
    assert len(raw) < MAX_HEAD_BYTES

    async def scenario(server: Http1Server) -> bytes:
        reader, writer = await server.connect()
        for start in range(0, len(raw), piece):
            writer.write(raw[start : start + piece])
            await writer.drain()
            await asyncio.sleep(0)
        received = await read_until(reader, complete(1))
        writer.close()
        return without_date(received)

    if piece == 7:  # many small reads: inferline alone, uvicorn's answer is the same
        received = await scenario(shared[1])
    else:
        reference, received = await _on_shared(shared, scenario)
        assert received == reference
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")


# keep-alive


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(protocol: str) -> None:
    async with Http1Server(PROTOCOLS[protocol], timeout_keep_alive=1) as server:
        reader, writer = await server.connect()
        writer.write(_request("/echo"))
        await read_until(reader, complete(1))
        assert await read_to_eof(reader) == b""  # the server closes it, unasked
        writer.close()


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_busy_connection_outlives_the_keep_alive_timeout(protocol: str) -> None:
    async with Http1Server(PROTOCOLS[protocol], timeout_keep_alive=1) as server:
        reader, writer = await server.connect()
        loop = asyncio.get_running_loop()
        start, count = loop.time(), 0
        while loop.time() - start < 2.2:  # requests every 0.1 s, for over twice the timeout
            writer.write(_request(f"/echo/{count}"))
            answers, _ = parse_answers(await read_until(reader, complete(1)))
            assert b'"path": "/echo/%d"' % count in answers[0].body
            count += 1
            await asyncio.sleep(0.1)
        assert await read_to_eof(reader) == b""  # and closes once idle
        writer.close()


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_slow_request_is_not_timed_out(protocol: str) -> None:
    async with Http1Server(PROTOCOLS[protocol], timeout_keep_alive=1) as server:
        reader, writer = await server.connect()
        writer.write(_request("/echo"))
        await read_until(reader, complete(1))  # the keep-alive timer runs from here
        raw = _request("/slow")
        writer.write(raw[:10])  # a head arriving slowly
        await asyncio.sleep(1.3)
        writer.write(raw[10:])
        await server.app.next_event("entered")
        await asyncio.sleep(1.3)  # an app answering slowly
        server.app.gate.set()
        answers, _ = parse_answers(await read_until(reader, complete(1)))
        assert answers[0].status == 200
        writer.close()


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_an_upload_answered_early_is_not_cut_off(protocol: str) -> None:
    """The app answers before the body has come; the client goes on sending it, slowly,
    past the keep-alive timeout, then asks again on the same connection."""
    async with Http1Server(PROTOCOLS[protocol], timeout_keep_alive=1) as server:
        reader, writer = await server.connect()
        length = 30_000
        writer.write(b"POST /status?code=413 HTTP/1.1\r\nhost: x\r\n")
        writer.write(b"content-length: %d\r\n\r\n" % length)
        answers, _ = parse_answers(await read_until(reader, complete(1, ["POST"])), ["POST"])
        assert answers[0].status == 413  # before the body
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while loop.time() - start < 2.2:  # a piece every 0.1 s, for over twice the timeout
            writer.write(b"b" * 1000)
            sent += 1000
            await writer.drain()
            await asyncio.sleep(0.1)
        assert sent < length
        writer.write(b"b" * (length - sent) + FOLLOW_UP)
        answers, _ = parse_answers(await read_until(reader, complete(1)))
        assert answers[0].status == 200
        writer.close()


# disconnects


async def test_a_disconnect_mid_body_is_the_apps_next_message() -> None:
    async def scenario(server: Http1Server) -> list[Any]:
        _, writer = await server.connect()
        writer.write(_request("/record", "POST", b"0123456789" * 10)[:-90])
        messages = [await server.app.next_event("received")]
        while sum(len(m.get("body", b"")) for m in messages) < 10:
            messages.append(await server.app.next_event("received"))
        writer.close()
        messages.append(await server.app.next_event("received"))
        return messages

    reference, messages = await on_both(scenario)
    assert messages == reference
    assert messages[-1] == {"type": "http.disconnect"}
    assert b"".join(m["body"] for m in messages[:-1]) == b"0123456789"


async def test_sends_after_a_disconnect_are_dropped_quietly(
    server_log: pytest.LogCaptureFixture,
) -> None:
    async def scenario(server: Http1Server) -> Any:
        _, writer = await server.connect()
        writer.write(_request("/late-answer", "POST", b"body"))
        await server.app.next_event("entered")
        writer.close()
        await poll(lambda: server.connections == 0, "the server to see the disconnect")
        writes = len(server.writes)
        server.app.gate.set()
        outcome = await server.app.next_event("sent")
        await poll(lambda: not server.server.server_state.tasks, "the app to return")
        assert len(server.writes) == writes  # nothing written to the closed connection
        return outcome

    assert await on_both(scenario) == (None, None)  # send() raised nothing
    assert _errors(server_log) == []


@pytest.mark.parametrize("mode", ["two", "cancelled"])
async def test_every_pending_receive_sees_the_disconnect(mode: str) -> None:
    """Two receive() calls at once, or one beside one cancelled at once (as Starlette's
    ``Request.is_disconnected`` does): the pending ones all return http.disconnect."""

    async def scenario(server: Http1Server) -> Any:
        _, writer = await server.connect()
        writer.write(_request(f"/receivers?{mode}", "POST", b"body"))
        await server.app.next_event("entered")
        writer.close()
        return await server.app.next_event("received")

    reference, received = await on_both(scenario)
    assert received == reference
    assert received == [{"type": "http.disconnect"}] * (2 if mode == "two" else 1)


async def test_a_stream_polling_for_disconnects_ends_when_the_client_goes() -> None:
    """Starlette's streaming answer listens for the disconnect while the stream runs."""

    async def scenario(server: Http1Server) -> bytes:
        reader, writer = await server.connect()
        writer.write(_request("/watched"))
        received = await read_until(reader, lambda data: b"first\r\n" in data)
        await server.app.next_event("streaming")
        writer.close()
        await server.app.next_event("stream ended")
        return without_date(received)

    reference, received = await on_both(scenario)
    assert received == reference


# graceful shutdown


@pytest.mark.parametrize("route", ["/slow", "/stream"])
async def test_shutdown_finishes_the_answer_under_way_then_closes(route: str) -> None:
    async def scenario(server: Http1Server) -> bytes:
        idle_reader, idle_writer = await server.connect()
        idle_writer.write(_request("/echo"))
        await read_until(idle_reader, complete(1))
        reader, writer = await server.connect()
        writer.write(_request(route))
        if route == "/slow":
            await server.app.next_event("entered")
        else:
            await read_until(reader, lambda data: data.endswith(b"\r\n\r\n"))
        server.server.should_exit = True
        assert await read_to_eof(idle_reader) == b""  # the idle connection is closed
        idle_writer.close()
        if route == "/slow":
            server.app.gate.set()
        else:
            for chunk in (b"one", b"two", b""):
                server.chunks.put_nowait(chunk)
        received = without_date(await read_to_eof(reader))  # the answer, then the close
        writer.close()
        await asyncio.wait_for(server.task, 10)
        return received

    reference, received = await on_both(scenario)
    assert received == reference
    if route == "/slow":
        answers, rest = parse_answers(received)
        assert answers[0].status == 200 and rest == b""
        assert answers[0].header(b"connection") == b"close"
    else:
        assert received.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")


async def test_shutdown_answers_the_requests_pipelined_behind_the_one_under_way() -> None:
    """As uvicorn: the connection closes after the last request it had read, not the first."""

    async def scenario(server: Http1Server) -> bytes:
        reader, writer = await server.connect()
        writer.write(_request("/slow") + _request("/echo"))
        await server.app.next_event("entered")
        server.server.should_exit = True
        # uvicorn stops listening and, in the same step, shuts each connection down.
        await poll(lambda: not any(s.is_serving() for s in server.server.servers), "shutdown")
        server.app.gate.set()
        received = without_date(await read_to_eof(reader))
        writer.close()
        await asyncio.wait_for(server.task, 10)
        return received

    reference, received = await on_both(scenario)
    assert received == reference
    answers, rest = parse_answers(received)
    assert [a.status for a in answers] == [200, 200] and rest == b""
    assert answers[0].header(b"connection") is None
    assert answers[1].header(b"connection") == b"close"


# limit_concurrency


async def test_over_the_concurrency_limit_is_answered_503() -> None:
    async def scenario(server: Http1Server) -> tuple[bytes, bytes]:
        reader, writer = await server.connect()
        writer.write(_request("/slow"))
        await server.app.next_event("entered")
        refused = await _talk(server, _request("/echo"), ["GET"], "close")
        server.app.gate.set()
        served = without_date(await read_until(reader, complete(1)))
        writer.close()
        return refused, served

    reference, (refused, served) = await on_both(scenario, limit_concurrency=2)
    assert (refused, served) == reference
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"connection: close\r\n" in refused
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")


# an app that misbehaves

MISBEHAVING = {
    "returns without starting": "/no-start",
    "raises before starting": "/broken",
    "sends the body first": "/body-first",
    "returns without completing a stream": "/no-complete-chunked",
    "an invalid header name": "/bad-header-name",
    "an invalid header value": "/bad-header-value",
    "a body shorter than its content-length": "/too-short",
    "returns a value": "/returns-value",
    "sends after completing": "/after-complete",
}


async def _misbehaving(
    server: Http1Server, route: str, caplog: pytest.LogCaptureFixture
) -> tuple[bytes, list[str]]:
    caplog.clear()
    reader, writer = await server.connect()
    writer.write(_request(route))
    received = without_date(await read_to_eof(reader))
    writer.close()
    await _still_serving(server)
    return received, _messages(caplog)


@shared_loop
@pytest.mark.parametrize("name", list(MISBEHAVING))
async def test_an_app_misbehaving_as_uvicorn(
    name: str, shared: Any, server_log: pytest.LogCaptureFixture
) -> None:
    async def scenario(server: Http1Server) -> tuple[bytes, list[str]]:
        return await _misbehaving(server, MISBEHAVING[name], server_log)

    reference, received = await _on_shared(shared, scenario)
    assert received == reference
    assert received[1]  # the misbehaviour is logged
    if "starting" in name or "first" in name:
        assert received[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert received[0].endswith(b"\r\n\r\nInternal Server Error")
    elif "invalid header" in name:
        assert received[0] == b""  # nothing of a head that cannot be sent


@shared_loop
@pytest.mark.parametrize("route", ["/no-complete-fixed", "/too-long", "/head-then-fail"])
async def test_a_failed_fixed_length_answer_sends_nothing(
    route: str, shared: Any, server_log: pytest.LogCaptureFixture
) -> None:
    """uvicorn has written the head when the app fails; inferline holds a fixed-length
    answer's head for its body, so drops it: the client sees only the close."""

    async def scenario(server: Http1Server) -> tuple[bytes, list[str]]:
        return await _misbehaving(server, route, server_log)

    (reference, logged_reference), (received, logged) = await _on_shared(shared, scenario)
    assert reference.startswith(b"HTTP/1.1 200 OK\r\n") and reference.endswith(b"\r\n\r\n")
    assert received == b""
    assert logged == logged_reference


# any split of a byte stream


class _Transport:
    """Collects what the protocol writes; delivers the close as asyncio does."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.out = bytearray()
        self.closing = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return info.get(name, default)

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.out += data

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def _serve_pieces(protocol_class: Any, pieces: list[bytes], yields: list[int]) -> bytes:
    """Feed ``pieces`` to one connection as reads, yielding to the loop in between, and
    return what it wrote by the time it closed."""
    config = uvicorn.Config(ConformanceApp(), lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"then"), *config.encoded_headers]
    protocol = protocol_class(config, state, {})
    transport = _Transport(protocol)
    protocol.connection_made(transport)

    async def settle(condition: Any, what: str) -> None:
        for _ in range(20000):
            if condition():
                return
            await asyncio.sleep(0)
        pytest.fail(f"never {what}")

    for piece, count in zip(pieces, yields, strict=True):
        await settle(lambda: not transport.paused or transport.closing, "resumed reading")
        if transport.closing:
            break
        protocol.data_received(piece)
        for _ in range(count):
            await asyncio.sleep(0)
    await settle(lambda: transport.closing and not state.tasks, "closed")
    return bytes(transport.out)


PIECES = [
    _request("/echo?a=1", "POST", b"0123456789"),
    CHUNKED_UPLOAD.replace(b"/echo", b"/echo/%7Ex"),
    _request("/echo", "HEAD"),
    _request("/parts?x", "POST", b"streamed"),
    _request("/echo", "POST", b"abc", b"expect: 100-continue\r\n"),
    _request("/status?code=204"),
    _request("/small", "POST", b"starlette"),
    _request("/header?keep-alive"),
]
LAST = _request("/echo/last", headers=b"connection: close\r\n")


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_split_of_a_pipelined_stream_gets_the_same_answers(data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6), "requests")
    stream = b"".join(chosen) + LAST
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=40), "cuts"))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    yields = data.draw(st.lists(st.integers(0, 3), min_size=len(pieces), max_size=len(pieces)))

    async def main() -> tuple[bytes, bytes, bytes]:
        reference = await _serve_pieces(PROTOCOLS["uvicorn"], [stream], [0])
        whole = await _serve_pieces(HttpProtocol, [stream], [0])
        split = await _serve_pieces(HttpProtocol, pieces, yields)
        return reference, whole, split

    reference, whole, split = asyncio.run(main())
    assert whole == reference
    assert split == whole
    methods = [piece.split(b" ", 1)[0].decode() for piece in chosen] + ["GET"]
    answers, rest = parse_answers(whole, methods)
    assert rest == b"" and len([a for a in answers if a.status >= 200]) == len(methods)
