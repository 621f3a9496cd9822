"""One HTTP/2 stream of the native gRPC server, and the request head it carries.

A stream lives from the client's HEADERS until both sides have ended it (or
one reset it). Its fields are plain slots: the connection reads and writes
them on the hot path, where a property or a method call is measurable.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

__all__ = ["RequestHead", "Stream", "oversized", "parse_head"]

Header = tuple[str, str]

#: Headers HTTP/2 forbids (RFC 9113 §8.2.2); ``te`` is allowed only as "trailers".
_CONNECTION_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_PSEUDO = frozenset({":method", ":scheme", ":path", ":authority"})
#: Headers gRPC reserves for itself; the rest is the client's custom metadata.
_RESERVED = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent"}
)


class RequestHead(NamedTuple):
    """What a request's header block says, read once (and cached for repeated blocks)."""

    method: str
    path: str
    content_type: str
    #: The raw ``grpc-timeout`` value ("100m"), if any.
    timeout: str | None
    encoding: str | None
    request_id: str | None
    #: The client's custom metadata, in order.
    metadata: tuple[Header, ...]
    #: Header list size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (§6.5.2).
    size: int
    #: Why the block is not a valid HTTP/2 request (a stream PROTOCOL_ERROR), or None.
    malformed: str | None


def parse_head(headers: list[Header]) -> RequestHead:
    """The request head of a decoded header block."""
    method = path = scheme = content_type = ""
    timeout = encoding = request_id = malformed = None
    metadata: list[Header] = []
    size = 0
    regular = False
    for header in headers:
        name, value = header
        size += len(name) + len(value) + 32
        if name[:1] == ":":
            if regular or name not in _PSEUDO:
                malformed = f"pseudo-header {name!r} out of place"
            elif name == ":method":
                method = value
            elif name == ":path":
                path = value
            elif name == ":scheme":
                scheme = value
            continue
        regular = True
        if name in _RESERVED:
            if name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
            elif name == "te" and value != "trailers":
                malformed = "te other than 'trailers'"
            continue
        if name in _CONNECTION_HEADERS or name != name.lower():
            malformed = f"header {name!r} not allowed in HTTP/2"
        elif name == "x-request-id":
            request_id = value
        metadata.append(header)
    if not (method and path and scheme) and malformed is None:
        malformed = "missing :method, :path or :scheme"
    return RequestHead(
        method,
        path,
        content_type,
        timeout,
        encoding,
        request_id,
        tuple(metadata),
        size,
        malformed,
    )


def oversized(size: int) -> RequestHead:
    """The head of a request whose header list is over the limit (answered HTTP 431):
    its fields were not kept while decoding."""
    return RequestHead("", "", "", None, None, None, (), size, None)


class Stream:
    """A client-initiated stream: its request, its windows and what waits to be sent."""

    __slots__ = (
        "chunks",
        "declared",
        "ended",
        "head",
        "headers_sent",
        "id",
        "pending",
        "recv_window",
        "remote_closed",
        "route",
        "send_window",
        "size",
        "task",
        "timer",
        "trailer",
        "waiter",
    )

    def __init__(self, stream_id: int, head: RequestHead, send_window: int, recv_window: int):
        self.id = stream_id
        self.head = head
        #: The request body so far.
        self.chunks: list[bytes] = []
        self.size = 0
        #: The message length its prefix declares, once the 5-byte prefix is in (else -1).
        self.declared = -1
        #: The client sent END_STREAM.
        self.remote_closed = False
        #: We sent END_STREAM (or reset it): nothing more goes out.
        self.ended = False
        self.headers_sent = False
        self.send_window = send_window
        self.recv_window = recv_window
        #: What the dispatcher chose at HEADERS (an RPC, or a marker for ModelInfer).
        self.route: Any = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        #: DATA payload waiting for flow-control window, then the trailers frame to follow it.
        self.pending = b""
        self.trailer = b""
        #: Set by a streaming handler waiting for its pending bytes to drain.
        self.waiter: asyncio.Future[None] | None = None
