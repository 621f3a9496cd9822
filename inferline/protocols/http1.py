"""uvicorn's httptools protocol, writing each small response in one piece.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body on ``http.response.body``: two writes, and
on uvloop two ``send`` system calls, for every answer. For an inference answer
of a few hundred bytes the second call is pure overhead (strace under load: two
writes per request). This protocol holds the head of a response that declares
its ``content-length`` until the first body message and writes both together.
Streamed responses (no length: chunked) are left alone, so their head is never
delayed behind a slow first chunk.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["CoalescingHttpToolsProtocol"]


class _Held:
    """Stands in for the transport while uvicorn writes a response head: keeps it."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _Prefixed:
    """Stands in for the transport for one body write: the held head goes first."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: Any, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.transport.write(head + data)

    def close(self) -> None:
        if self.head:
            self.write(b"")
        self.transport.close()


class _CoalescingCycle(RequestResponseCycle):
    """A request-response cycle whose fixed-length responses leave in one write."""

    _held: bytes = b""

    async def send(self, message: Any) -> None:
        real = self.transport
        if not self.response_started and message["type"] == "http.response.start":
            held = _Held()
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = real
            if self.chunked_encoding is False and held.data:
                self._held = held.data
            elif held.data:
                real.write(held.data)
            return
        head = self._held
        if not head:
            await super().send(message)
            return
        self._held = b""
        prefixed = _Prefixed(real, head)
        self.transport = prefixed  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = real
            if prefixed.head and not self.disconnected:
                real.write(prefixed.head)  # the body was refused: the head goes, as before


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=...)``: httptools parsing, one write per small response."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Every cycle starts here, pipelined ones included; the subclass only
        # changes ``send``, and adds no state that __init__ would have to set.
        cycle.__class__ = _CoalescingCycle
        super()._start_asgi_task(cycle, app)
