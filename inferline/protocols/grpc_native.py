"""gRPC over HTTP/2 semantics for the native server: route, frame messages, answer.

Follows the gRPC "PROTOCOL-HTTP2" spec: a request is POST with content-type
``application/grpc[+proto]`` (else HTTP 415), ``:path`` names the method
(unknown: UNIMPLEMENTED), the body is one 5-byte length-prefixed message,
``grpc-timeout`` bounds the call (DEADLINE_EXCEEDED, handler cancelled), and
the answer ends with ``grpc-status`` / ``grpc-message`` trailers (trailers-only
for an error before any message). The RPCs themselves, their request ids and
their error mapping are :class:`~inferline.protocols.v2_grpc.GrpcService`'s,
shared with the grpcio transport.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from inferline.dataplane import DataPlane
from inferline.protocols._grpc_auth import admit, authorization_of
from inferline.protocols.status import (
    CACHE_HEADER,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    grpc_error,
    new_request_id,
)
from inferline.protocols.v2_grpc import (
    MODEL_INFER_PATH,
    GrpcService,
    Metadata,
    Rpc,
    parse_message,
)
from inferline.security import Guard, rpc_rule
from inferline.transport.grpc_h2 import GrpcServer, Limits
from inferline.transport.grpc_h2.connection import Connection
from inferline.transport.grpc_h2.hpack import literal, literal_value
from inferline.transport.grpc_h2.streams import Stream

__all__ = [
    "CODES",
    "RESPONSE_HEADERS",
    "Dispatcher",
    "http_status",
    "native_server",
    "status_block",
]

#: ``grpc.StatusCode`` names to their numbers (so this module needs no grpcio).
CODES = {
    name: number
    for number, name in enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
}
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# Precomputed header blocks: ":status: 200" is static index 8; content-type is
# static name 31 as a literal without indexing.
RESPONSE_HEADERS = b"\x88\x0f\x10" + literal_value("application/grpc")
_STATUS_OK = literal("grpc-status", "0")
_REQUEST_ID = literal(REQUEST_ID_HEADER, "")[:-1]  # the name part: value follows
_MODEL_VERSION = literal(MODEL_VERSION_HEADER, "")[:-1]
_CACHE = {state: literal(CACHE_HEADER, state) for state in ("hit", "miss")}
_INFER = object()  # the route of ModelInfer: bytes in, bytes out
_versions: dict[str, bytes] = {}


def status_block(code: int, message: str, trailers: Metadata) -> bytes:
    """A trailers block: ``grpc-status``, ``grpc-message`` (percent-encoded), metadata."""
    parts = [_STATUS_OK if not code else literal("grpc-status", str(code))]
    if message:
        parts.append(literal("grpc-message", _percent(message)))
    parts += [literal(name.lower(), value) for name, value in trailers]
    return b"".join(parts)


def http_status(status: int) -> bytes:
    """A ``:status`` header for a request that is not gRPC (static name 8, no indexing)."""
    return b"\x08" + literal_value(str(status))


def _percent(message: str) -> str:
    """gRPC's percent-encoding: UTF-8, with bytes outside 0x20-0x7E and '%' escaped."""
    raw = message.encode()[:4096]
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw.decode()
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)


def _timeout(value: str) -> float | None:
    """Seconds of a ``grpc-timeout`` value (at most 8 digits and a unit), or None if bad."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


class Dispatcher:
    """Routes each stream to its RPC and writes its answer through the connection."""

    def __init__(
        self,
        service: GrpcService,
        max_message: int,
        max_header_list_size: int,
        guard: Guard | None = None,
    ) -> None:
        self._service = service
        self._guard = guard
        self._rpcs = service.rpcs
        self._infer = service.infer
        self._max_message = max_message
        self._max_header_list = max_header_list_size

    def open(self, conn: Connection, stream: Stream) -> bool:
        """Check a new request's head; False when it was answered (refused) already."""
        head = stream.head
        if head.size > self._max_header_list:
            conn.finish(stream, http_status(431), status_block(13, "header list too large", []))
            return False
        if head.method != "POST":
            conn.finish(stream, http_status(405), status_block(13, "gRPC needs POST", []))
            return False
        if not head.content_type.startswith("application/grpc"):
            message = f"content-type {head.content_type!r} is not application/grpc"
            conn.finish(stream, http_status(415), status_block(13, message, []))
            return False
        guard = self._guard
        if guard is not None and not guard.idle:
            # No credentials where they are needed: refused before any message is read.
            error = guard.refuse_early(
                rpc_rule(head.path), authorization_of(head.metadata), _peer(conn), "grpc", head.path
            )
            if error is not None:
                self._fail(conn, stream, CODES[error.grpc_code], error.message)
                return False
        path = head.path
        if path == MODEL_INFER_PATH:
            stream.route = _INFER
        else:
            rpc = self._rpcs.get(path)
            if rpc is None:
                self._fail(conn, stream, CODES["UNIMPLEMENTED"], f"unknown method {path}")
                return False
            stream.route = rpc
        if head.encoding not in (None, "identity", "gzip"):
            self._fail(
                conn,
                stream,
                CODES["UNIMPLEMENTED"],
                f"grpc-encoding {head.encoding!r} is not supported",
                [("grpc-accept-encoding", "identity,gzip")],
            )
            return False
        if head.timeout is not None:
            seconds = _timeout(head.timeout)
            if seconds is None:
                self._fail(conn, stream, CODES["INTERNAL"], f"bad grpc-timeout {head.timeout!r}")
                return False
            loop = asyncio.get_running_loop()
            stream.timer = loop.call_later(seconds, self._expire, conn, stream)
        return True

    def size_ok(self, conn: Connection, stream: Stream) -> bool:
        """Refuse a message over the limit as soon as its length prefix arrives."""
        declared = stream.declared
        if declared < 0:  # once per stream: joining tiny chunks per frame would be quadratic
            first = stream.chunks[0]
            prefix = first if len(first) >= 5 else b"".join(stream.chunks)[:5]
            declared = stream.declared = int.from_bytes(prefix[1:5], "big")
        if declared > self._max_message:
            message = f"received message larger than max ({declared} vs. {self._max_message})"
            self._fail(conn, stream, CODES["RESOURCE_EXHAUSTED"], message)
            return False
        if stream.size > declared + 5:
            self._fail(conn, stream, CODES["INTERNAL"], "more than one request message")
            return False
        pool = conn.pool
        if pool.held > pool.cap or declared + 5 - stream.size > pool.cap - pool.held:
            message = f"server holds too many request bytes ({pool.cap} at most); try again"
            self._fail(conn, stream, CODES["RESOURCE_EXHAUSTED"], message)
            return False
        return True

    def start(self, conn: Connection, stream: Stream) -> None:
        """The request is complete: check its framing and start its handler."""
        body = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        conn.release(stream)
        if len(body) < 5 or len(body) != int.from_bytes(body[1:5], "big") + 5:
            self._fail(conn, stream, CODES["INTERNAL"], "request is not one complete message")
            return
        message: bytes | None = body[5:]
        if body[0]:
            message = self._decompress(conn, stream, body[0], body[5:])
        if message is None:
            return
        route = stream.route
        coro: Coroutine[Any, Any, None]
        if route is _INFER:
            coro = self._run_infer(conn, stream, message)
        elif route.streaming:
            coro = self._run_stream(conn, stream, route, message)
        else:
            coro = self._run_unary(conn, stream, route, message)
        stream.task = task = asyncio.get_running_loop().create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.task_done)

    def _decompress(self, conn: Connection, stream: Stream, flag: int, data: bytes) -> bytes | None:
        encoding = stream.head.encoding
        if flag != 1 or encoding in (None, "identity"):
            self._fail(conn, stream, CODES["INTERNAL"], "compressed message without grpc-encoding")
            return None
        inflate = zlib.decompressobj(wbits=31)  # gzip
        try:
            message = inflate.decompress(data, self._max_message + 1)
        except zlib.error:
            self._fail(conn, stream, CODES["INTERNAL"], "bad gzip message")
            return None
        if len(message) > self._max_message or inflate.unconsumed_tail:
            reason = f"decompressed message larger than max ({self._max_message})"
            self._fail(conn, stream, CODES["RESOURCE_EXHAUSTED"], reason)
            return None
        return message

    # -- handlers --------------------------------------------------------------------
    async def _admit(self, conn: Connection, stream: Stream, path: str, message: bytes) -> None:
        """The policy check (the ``authorization`` header), when a guard is set."""
        guard = self._guard
        if guard is not None and not guard.idle:
            await admit(guard, path, stream.head.metadata, message, _peer(conn))

    async def _run_infer(self, conn: Connection, stream: Stream, message: bytes) -> None:
        request_id = stream.head.request_id or new_request_id()
        try:
            if self._guard is not None:
                await self._admit(conn, stream, MODEL_INFER_PATH, message)
            body, version, cache = await self._infer(message, request_id)
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            self._error(conn, stream, exc, [(REQUEST_ID_HEADER, request_id)])
            return
        if len(body) > self._max_message:
            self._too_big(conn, stream, len(body), [(REQUEST_ID_HEADER, request_id)])
            return
        encoded = _versions.get(version)
        if encoded is None:
            encoded = _versions[version] = _MODEL_VERSION + literal_value(version)
            if len(_versions) > 1024:
                _versions.clear()
        trailers = _STATUS_OK + _REQUEST_ID + literal_value(request_id) + encoded
        if cache is not None:
            trailers += _CACHE[cache]
        conn.respond(stream, RESPONSE_HEADERS, body, trailers)

    async def _run_unary(self, conn: Connection, stream: Stream, rpc: Rpc, message: bytes) -> None:
        trailers: Metadata = [(REQUEST_ID_HEADER, stream.head.request_id or new_request_id())]
        try:
            await self._admit(conn, stream, rpc.path, message)
            request = parse_message(rpc, message)
            body = rpc.serialize(await rpc.handler(request, trailers))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            self._error(conn, stream, exc, trailers)
            return
        if len(body) > self._max_message:
            self._too_big(conn, stream, len(body), trailers)
            return
        conn.respond(stream, RESPONSE_HEADERS, body, status_block(0, "", trailers))

    async def _run_stream(self, conn: Connection, stream: Stream, rpc: Rpc, message: bytes) -> None:
        trailers: Metadata = [(REQUEST_ID_HEADER, stream.head.request_id or new_request_id())]
        try:
            await self._admit(conn, stream, rpc.path, message)
            request = parse_message(rpc, message)
            replies: AsyncIterator[Any] = rpc.handler(request, trailers)  # type: ignore[assignment]
            async for reply in replies:
                await conn.send_message(stream, RESPONSE_HEADERS, rpc.serialize(reply))
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            self._error(conn, stream, exc, trailers)
            return
        conn.finish(stream, RESPONSE_HEADERS, status_block(0, "", trailers))

    # -- errors ----------------------------------------------------------------------
    def _error(self, conn: Connection, stream: Stream, exc: Exception, trailers: Metadata) -> None:
        code, message, trailers = grpc_error(exc, trailers)
        self._fail(conn, stream, CODES[code], message, trailers)

    def _too_big(self, conn: Connection, stream: Stream, size: int, trailers: Metadata) -> None:
        message = f"sent message larger than max ({size} vs. {self._max_message})"
        self._fail(conn, stream, CODES["RESOURCE_EXHAUSTED"], message, trailers)

    def _fail(
        self,
        conn: Connection,
        stream: Stream,
        code: int,
        message: str,
        trailers: Metadata | None = None,
    ) -> None:
        if trailers is None:
            trailers = [(REQUEST_ID_HEADER, stream.head.request_id or new_request_id())]
        conn.finish(stream, RESPONSE_HEADERS, status_block(code, message, trailers))

    def _expire(self, conn: Connection, stream: Stream) -> None:
        """The client's deadline passed: answer DEADLINE_EXCEEDED and cancel the handler."""
        stream.timer = None
        task = stream.task
        self._fail(conn, stream, CODES["DEADLINE_EXCEEDED"], "Deadline Exceeded")
        if task is not None:
            task.cancel()


def _peer(conn: Connection) -> str:
    peer = conn.transport.get_extra_info("peername") if conn.transport else None
    return str(peer[0]) if peer else "unknown"


def native_server(
    dataplane: DataPlane, limits: Limits | None = None, guard: Guard | None = None
) -> GrpcServer:
    """V2 inference and ``grpc.health.v1`` on the native HTTP/2 transport."""
    limits = limits or Limits.from_settings(dataplane.settings)
    dispatcher = Dispatcher(
        GrpcService(dataplane), limits.max_message, limits.max_header_list_size, guard
    )
    return GrpcServer(dispatcher, limits)
