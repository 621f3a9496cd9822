"""One request and its answer on an HTTP/1.1 connection: the app's receive and send."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

if TYPE_CHECKING:
    from inferline.transport.http1.connection import HttpProtocol

__all__ = ["CANCEL_ON_DISCONNECT", "App", "Cycle"]

App = Any  # an ASGI 3 application

#: Scope key an app sets (to True) on a request whose work is worthless once the
#: client has gone (an inference): then a hang-up cancels the app's task at once, as a
#: gRPC cancel does. Without it the app runs on and sees ``http.disconnect``, as on
#: uvicorn's protocol (what a handler that must finish what it started needs).
CANCEL_ON_DISCONNECT = "inferline.cancel_on_disconnect"

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ONE_WRITE_MAX = 64 * 1024  # above this, head and body go out by writelines, not copied
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


class Cycle:
    """One request and its answer: the ASGI ``receive`` and ``send`` of one app call."""

    __slots__ = (
        "body_done",
        "buffered",
        "chunked",
        "chunks",
        "disconnected",
        "held",
        "keep_alive",
        "more_body",
        "protocol",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "waiter",
        "waiting_for_100_continue",
    )

    def __init__(
        self, protocol: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.body_done = False  # the last body message went to the app
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked: bool | None = None
        self.remaining = 0  # bytes of body still owed under content-length
        self.held = b""  # the head of a fixed-length answer, written with its body
        self.task: asyncio.Task[None] | None = None  # the app's call, once started

    def client_gone(self) -> None:
        """The connection closed: wake the app's receive(), and cancel the app's call
        when the request asked for it (see :data:`CANCEL_ON_DISCONNECT`)."""
        if not (self.response_complete or self.disconnected):
            self.disconnected = True
            task = self.task
            if task is not None and self._cancelled_by_client() and not task.done():
                task.cancel()
        self.wake()

    def _cancelled_by_client(self) -> bool:
        """The client went away from a request that asked to be cancelled then."""
        return self.disconnected and bool(self.scope.get(CANCEL_ON_DISCONNECT))

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_asgi(self, app: App) -> None:
        protocol = self.protocol
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._cancelled_by_client():
                # nobody is left to answer, and nothing went wrong here
                protocol.logger.debug(
                    "client went away; its request to %s was cancelled", self.scope["path"]
                )
                return
            protocol.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self._close()
        else:
            if result is not None:
                protocol.logger.error(
                    "ASGI callable should return None, but returned '%s'.", result
                )
                self._close()
            elif not self.response_started and not self.disconnected:
                protocol.logger.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                protocol.logger.error("ASGI callable returned without completing response.")
                self._close()

    def _close(self) -> None:
        """Close after a broken answer. A held head is dropped: it would promise a
        body that never comes, and the client sees the close either way."""
        self.held = b""
        self.protocol.transport.close()

    async def _send_500(self) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def receive(self) -> dict[str, Any]:
        protocol = self.protocol
        if self.waiting_for_100_continue and not protocol.transport.is_closing():
            protocol.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        while not (self.chunks or self.disconnected or self.response_complete) and (
            self.more_body or self.body_done
        ):
            protocol.flow.resume_reading()
            waiter = self.waiter
            if waiter is None or waiter.done():
                waiter = self.waiter = protocol.loop.create_future()
                try:
                    await waiter
                finally:
                    if self.waiter is waiter:
                        self.waiter = None
            else:  # another receive() waits too: share its wake-up, never cancel it
                await asyncio.wait((waiter,))
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.buffered > HIGH_WATER_LIMIT:
            protocol.flow.resume_reading()
        self.chunks = []
        self.buffered = 0
        more_body = self.more_body
        self.body_done = not more_body
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def send(self, message: Any) -> None:
        protocol = self.protocol
        if protocol.flow.write_paused and not self.disconnected:
            await protocol.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            head = self._head(message["status"], message.get("headers", ()))
            if self.chunked:
                protocol.transport.write(head)  # a stream's head never waits for its chunks
            else:
                self.held = head
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, "
                "after response already completed."
            )
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.remaining = 0
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining -= len(body)
            data = body
        held = self.held
        if held:
            self.held = b""
            if len(data) <= _ONE_WRITE_MAX:
                protocol.transport.write(held + data)
            else:
                protocol.transport.writelines([held, data])
        elif data:
            protocol.transport.write(data)
        if not more_body:
            if self.remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                protocol.transport.close()
            protocol.on_response_complete()

    def _head(self, status: int, headers: Any) -> bytes:
        """The status line and headers; notes the body's framing and connection close."""
        protocol = self.protocol
        if protocol.access_log:
            _log_access(protocol, self.scope, status)
        content = [STATUS_LINE[status], protocol.default_headers()]
        close = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked is None:
                        self.remaining = int(value.decode())
                        self.chunked = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.remaining = 0
                        self.chunked = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False  # connection: close
                    close = True
            content.append(name + b": " + value + b"\r\n")
        # Concatenation adds no byte the checks refuse, so one search covers every header.
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        if self.chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)


def _log_access(protocol: HttpProtocol, scope: dict[str, Any], status: int) -> None:
    protocol.access_logger.info(
        '%s - "%s %s HTTP/%s" %d',
        get_client_addr(scope),  # type: ignore[arg-type]
        scope["method"],
        get_path_with_query_string(scope),  # type: ignore[arg-type]
        scope["http_version"],
        status,
    )
