"""The native gRPC server: listens, owns its connections, stops gracefully.

Runs in the caller's event loop (uvicorn's, in ``inferline serve``), so a gRPC
request costs no thread hand-off: frames are read in ``data_received`` and the
RPC runs as a task of the same loop as REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from inferline.transport.grpc_h2.connection import Connection, Dispatcher, Limits

__all__ = ["GrpcServer"]


class GrpcServer:
    """gRPC over inferline's own HTTP/2 (h2c, or TLS with ALPN ``h2``); what the RPCs do
    is ``dispatcher``'s."""

    def __init__(self, dispatcher: Dispatcher, limits: Limits) -> None:
        self._limits = limits
        self._dispatcher = dispatcher
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._closed: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve connections accepted on ``sock`` in the running loop (TLS with ``tls``,
        whose ALPN must offer ``h2``; the handshake is bounded by the handshake timeout)."""
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        timeout = self._limits.handshake_timeout if tls is not None else None
        self._server = await loop.create_server(
            self._connection, sock=sock, ssl=tls, ssl_handshake_timeout=timeout
        )

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting, send GOAWAY, let open streams finish for ``grace`` seconds."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            if grace:
                conn.shutdown()
            else:
                conn.abort()
        if self._connections and grace and self._closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), grace)
        tasks = [task for conn in self._connections for task in conn.tasks]
        for conn in list(self._connections):
            conn.abort()  # cancels what still runs; awaited below, so nothing outlives stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _connection(self) -> Connection:
        if len(self._connections) >= self._limits.max_connections:
            # Answered (SETTINGS, GOAWAY ENHANCE_YOUR_CALM) and closed, not left hanging.
            return Connection(self._dispatcher, self._limits, _ignore, refuse=True)
        conn = Connection(self._dispatcher, self._limits, self._forget)
        self._connections.add(conn)
        return conn

    def _forget(self, conn: Connection) -> None:
        self._connections.discard(conn)
        if not self._connections and self._closed is not None:
            self._closed.set()


def _ignore(_: Connection) -> None:
    """``on_close`` of a refused connection, which was never counted."""
