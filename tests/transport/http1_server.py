"""A real uvicorn server on a loopback port for the HTTP/1.1 protocol tests.

The server runs in the test's own event loop with the protocol under test
(inferline's ``HttpProtocol`` or uvicorn's ``HttpToolsProtocol``, the reference),
wrapped so the tests can count what it writes and how it pauses; the client is a
raw socket, so what is compared is exactly what goes over the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferline.transport.http1 import HttpProtocol

__all__ = [
    "PROTOCOLS",
    "Answer",
    "ConformanceApp",
    "Http1Server",
    "Stats",
    "complete",
    "exchange",
    "on_both",
    "parse_answers",
    "poll",
    "read_to_eof",
    "read_until",
    "without_date",
]

PROTOCOLS = {"uvicorn": HttpToolsProtocol, "inferline": HttpProtocol}
WAIT = 10.0  #: seconds one read may wait before the test fails: generous, never asserted
BIG = 1024 * 1024  #: the large request and response bodies
STREAM_PART = 64 * 1024
STREAM_PARTS = 256  #: 16 MiB streamed: more than the kernel's socket buffers hold

T = TypeVar("T")

#: Chunks the streaming route may send: the test releases each one.
release = asyncio.Queue[bytes]


# the app


def _starlette(chunks: release, events: asyncio.Queue[tuple[str, Any]]) -> Starlette:
    async def small(request: Request) -> Response:
        body = await request.body()
        return Response(b'{"echo":' + str(len(body)).encode() + b"}", media_type="text/plain")

    async def stream(_: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            while (chunk := await chunks.get()) != b"":
                yield chunk

        return StreamingResponse(parts(), media_type="text/plain")

    async def watched(request: Request) -> StreamingResponse:
        """A stream that polls for a disconnect, as server-sent events often do."""

        async def parts() -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await request.is_disconnected()  # a receive() cancelled at once
                events.put_nowait(("streaming", None))
                await asyncio.Event().wait()  # no more events: only a disconnect ends this
                yield b"never"
            finally:
                events.put_nowait(("stream ended", None))

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
            Route("/watched", watched),
            Route("/broken", broken),
        ]
    )
    app.router.routes.append(Route("/head-then-fail", HeadThenFail()))
    return app


class ClientGone(Exception):
    """receive() said http.disconnect while the app read the body."""


async def read_body(receive: Any) -> tuple[bytes, list[int]]:
    """The whole request body and the size of each message it came in."""
    body, sizes = b"", []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message["body"]
        sizes.append(len(message["body"]))
        if not message.get("more_body", False):
            return body, sizes


def describe(scope: Any, body: bytes) -> bytes:
    """What the server told the app about the request, for the client to compare."""
    return json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "root_path": scope["root_path"],
            "http_version": scope["http_version"],
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest()[:16],
        },
        sort_keys=True,
    ).encode()


def _start(status: int = 200, headers: Any = (), length: int | None = None) -> dict[str, Any]:
    head = [(b"content-type", b"text/plain")]
    if length is not None:
        head.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": [*head, *headers]}


def _body(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": more}


async def answer(send: Any, body: bytes, status: int = 200, headers: Any = ()) -> None:
    await send(_start(status, headers, len(body)))
    await send(_body(body))


class ConformanceApp:
    """Raw ASGI routes for each behaviour under test; the rest goes to a Starlette app.

    Routes report to the test through ``events`` and wait for it on ``gate``.
    """

    def __init__(self) -> None:
        self.chunks: release = asyncio.Queue()
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.sent = 0  # parts the big stream has sent
        self.starlette = _starlette(self.chunks, self.events)
        self.routes: dict[str, Callable[[Any, Any, Any], Awaitable[Any]]] = {
            name.replace("_", "-"): getattr(self, name)
            for name in (
                "echo",
                "status",
                "header",
                "slow",
                "upload_slow",
                "record",
                "late_answer",
                "receivers",
                "no_start",
                "no_complete_fixed",
                "no_complete_chunked",
                "bad_header_name",
                "bad_header_value",
                "too_long",
                "too_short",
                "returns_value",
                "body_first",
                "after_complete",
                "big",
                "big_stream",
                "parts",
            )
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        path = scope["path"][len(scope["root_path"]) :]  # the first segment names the route
        route = self.routes.get(path.lstrip("/").split("/", 1)[0])
        if route is None:
            return await self.starlette(scope, receive, send)
        return await route(scope, receive, send)

    async def next_event(self, name: str) -> Any:
        """The next event the app reported, which must be ``name``."""
        try:
            got, value = await asyncio.wait_for(self.events.get(), WAIT)
        except TimeoutError:
            pytest.fail(f"the app never reported {name!r}")
        assert got == name, (got, value)
        return value

    async def echo(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body, _ = await read_body(receive)
        except ClientGone:
            return  # nobody to answer
        await answer(send, describe(scope, body))

    async def status(self, scope: Any, receive: Any, send: Any) -> None:
        """``?code=204``: that status, no content-length, an empty body."""
        code = int(urllib.parse.parse_qs(scope["query_string"].decode())["code"][0])
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send(_body(b""))

    async def header(self, scope: Any, receive: Any, send: Any) -> None:
        """Answers with the connection header the query string gives."""
        value = urllib.parse.unquote_to_bytes(scope["query_string"])
        await read_body(receive)
        await answer(send, b"ok", headers=[(b"connection", value)])

    async def slow(self, scope: Any, receive: Any, send: Any) -> None:
        body, _ = await read_body(receive)
        self.events.put_nowait(("entered", scope["path"]))
        await self.gate.wait()
        await answer(send, describe(scope, body))

    async def upload_slow(self, scope: Any, receive: Any, send: Any) -> None:
        """Reads the body only once the gate opens."""
        self.events.put_nowait(("entered", scope["path"]))
        await self.gate.wait()
        body, sizes = await read_body(receive)
        self.events.put_nowait(("sizes", sizes))
        await answer(send, describe(scope, body))

    async def record(self, scope: Any, receive: Any, send: Any) -> None:
        """Reports each message receive() gives, until the body ends or the client goes."""
        while True:
            message = await receive()
            self.events.put_nowait(("received", message))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if message["type"] != "http.disconnect":
            await answer(send, b"done")

    async def late_answer(self, scope: Any, receive: Any, send: Any) -> None:
        """Answers only once the gate opens, saying whether its sends raised."""
        await read_body(receive)
        self.events.put_nowait(("entered", scope["path"]))
        await self.gate.wait()
        try:
            await answer(send, b"too late")
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            self.events.put_nowait(("sent", repr(exc)))
        else:
            self.events.put_nowait(("sent", None))

    async def receivers(self, scope: Any, receive: Any, send: Any) -> None:
        """Two receive() calls at once (``?two``), or one beside one cancelled at once
        (``?cancelled``): every pending one must see the disconnect."""
        await read_body(receive)
        first = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        pending = [first, second]
        if scope["query_string"] == b"cancelled":
            second.cancel()
            pending = [first]
        await asyncio.sleep(0)
        self.events.put_nowait(("entered", scope["path"]))
        try:
            messages = await asyncio.wait_for(asyncio.gather(*pending), WAIT / 2)
        except TimeoutError:
            self.events.put_nowait(("received", "a receive() was never woken"))
        else:
            self.events.put_nowait(("received", messages))

    async def no_start(self, scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)

    async def no_complete_fixed(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=5))

    async def no_complete_chunked(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_start())

    async def bad_header_name(self, scope: Any, receive: Any, send: Any) -> None:
        await answer(send, b"ok", headers=[(b"bad name", b"x")])

    async def bad_header_value(self, scope: Any, receive: Any, send: Any) -> None:
        await answer(send, b"ok", headers=[(b"x-bad", b"a\r\nx-injected: b")])

    async def too_long(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=3))
        await send(_body(b"abcdef"))

    async def too_short(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=10))
        await send(_body(b"abc"))

    async def returns_value(self, scope: Any, receive: Any, send: Any) -> int:
        await answer(send, b"ok")
        return 42

    async def body_first(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_body(b"no head"))

    async def after_complete(self, scope: Any, receive: Any, send: Any) -> None:
        await answer(send, b"ok")
        await send(_body(b"more"))

    async def big(self, scope: Any, receive: Any, send: Any) -> None:
        await answer(send, bytes(range(256)) * (BIG // 256))

    async def big_stream(self, scope: Any, receive: Any, send: Any) -> None:
        await send(_start())
        part = b"x" * STREAM_PART
        for _ in range(STREAM_PARTS):
            await send(_body(part, more=True))
            self.sent += 1
        await send(_body(b""))

    async def parts(self, scope: Any, receive: Any, send: Any) -> None:
        """A streamed (chunked) answer describing the request, in three parts."""
        body, _ = await read_body(receive)
        await send(_start())
        description = describe(scope, body)
        await send(_body(description[:10], more=True))
        await send(_body(b"", more=True))
        await send(_body(description[10:], more=True))
        await send(_body(b""))


# the server, instrumented


@dataclass
class Stats:
    """What the protocol did to its transport, over all connections."""

    writes: list[int] = field(default_factory=list)  # bytes per write() or writelines()
    pause_reading: int = 0
    pause_writing: int = 0
    data_received: int = 0  # reads
    bytes_received: int = 0


class _Counting:
    """The real transport, counting writes and pauses."""

    def __init__(self, transport: Any, stats: Stats) -> None:
        self._transport = transport
        self._stats = stats

    def write(self, data: bytes) -> None:
        self._stats.writes.append(len(data))
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        lines = list(lines)
        self._stats.writes.append(sum(map(len, lines)))
        self._transport.writelines(lines)

    def pause_reading(self) -> None:
        self._stats.pause_reading += 1
        self._transport.pause_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def instrumented(base: type[Any], stats: Stats) -> type[Any]:
    class Counted(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(_Counting(transport, stats))

        def data_received(self, data: bytes) -> None:
            stats.data_received += 1
            stats.bytes_received += len(data)
            super().data_received(data)

        def pause_writing(self) -> None:
            stats.pause_writing += 1
            super().pause_writing()

    return Counted


class Http1Server:
    """uvicorn serving ``ConformanceApp`` with ``protocol`` on a loopback port."""

    def __init__(self, protocol: Any, **config: Any) -> None:
        self.stats = Stats()
        self.writes = self.stats.writes
        self.app = ConformanceApp()
        self.chunks = self.app.chunks
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "lifespan": "off",
            "log_config": None,
            "access_log": False,
            "ws": "none",
            # longer than any wait here: a close the test expects must come from what it tests
            "timeout_keep_alive": 60,
        }
        settings.update(config)
        self.config = uvicorn.Config(self.app, http=instrumented(protocol, self.stats), **settings)
        self.server = uvicorn.Server(self.config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.clients: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Http1Server:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        await poll(lambda: self.server.started, "uvicorn to start")
        return self

    async def __aexit__(self, *_: Any) -> None:
        for client in self.clients:  # closed already, unless a test failed half-way
            client.close()
        self.chunks.put_nowait(b"")  # ends a stream a failed test left open
        self.app.gate.set()
        self.server.should_exit = self.server.force_exit = True
        await self.task
        self.sock.close()

    @property
    def connections(self) -> int:
        return len(self.server.server_state.connections)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.clients.append(writer)
        return reader, writer


async def on_both(scenario: Callable[[Http1Server], Awaitable[T]], **config: Any) -> tuple[T, T]:
    """``scenario`` run against uvicorn's protocol, then against inferline's."""
    results = []
    for protocol in PROTOCOLS.values():
        async with Http1Server(protocol, **config) as server:
            results.append(await scenario(server))
    return results[0], results[1]


# the client


async def poll(condition: Callable[[], object], what: str, tries: int = 1000) -> None:
    """Wait (at most ``tries`` times 10 ms) for ``condition()``, else fail the test."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"waited in vain for {what}")


async def read_until(reader: asyncio.StreamReader, until: Callable[[bytes], bool]) -> bytes:
    """Read until ``until(received)``; fail if the server closes or stalls first."""
    received = b""
    while not until(received):
        try:
            data = await asyncio.wait_for(reader.read(1 << 20), WAIT)
        except TimeoutError:
            pytest.fail(f"the server stalled; received so far: {received[:300]!r}")
        if not data:
            pytest.fail(f"the server closed; received: {received[:300]!r}")
        received += data
    return received


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes; fail if it does not."""
    received = b""
    while True:
        try:
            data = await asyncio.wait_for(reader.read(1 << 20), WAIT)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; received: {received[:300]!r}")
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


async def exchange(port: int, raw: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Send ``raw`` and read until ``until(received)`` or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    received = b""
    try:
        while not until(received):
            data = await asyncio.wait_for(reader.read(1 << 20), WAIT)
            if not data:
                break
            received += data
    finally:
        writer.close()
    return received


def without_date(response: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", response)


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


def parse_answers(data: bytes, methods: list[str] | None = None) -> tuple[list[Answer], bytes]:
    """The complete answers at the start of ``data`` (interim 1xx ones included), and
    what follows them. ``methods`` are the requests' methods, in order (GET if not given):
    a HEAD's answer has no body."""
    answers: list[Answer] = []
    final = 0
    rest = data
    while (end := rest.find(b"\r\n\r\n")) >= 0:
        lines = rest[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        answer = Answer(status, headers, b"")  # type: ignore[arg-type]
        position = end + 4
        if 100 <= status < 200:
            answers.append(answer)
            rest = rest[position:]
            continue
        method = methods[final] if methods and final < len(methods) else "GET"
        length = answer.header(b"content-length")
        if method == "HEAD" or status in (204, 304):
            pass
        elif length is not None:
            if len(rest) < position + int(length):
                break
            answer.body = rest[position : position + int(length)]
            position += int(length)
        elif answer.header(b"transfer-encoding") == b"chunked":
            body, ended = b"", False
            while (line_end := rest.find(b"\r\n", position)) >= 0:
                size = int(rest[position:line_end], 16)
                if len(rest) < line_end + 2 + size + 2:
                    break
                body += rest[line_end + 2 : line_end + 2 + size]
                position = line_end + 2 + size + 2
                if size == 0:
                    ended = True
                    break
            if not ended:
                break
            answer.body = body
        else:
            break  # delimited by the close: never complete here
        answers.append(answer)
        final += 1
        rest = rest[position:]
    return answers, rest


def complete(count: int, methods: list[str] | None = None) -> Callable[[bytes], bool]:
    """Received ``count`` final answers."""

    def done(data: bytes) -> bool:
        answers, _ = parse_answers(data, methods)
        return sum(1 for a in answers if a.status >= 200) >= count

    return done
