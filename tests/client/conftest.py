"""Real servers in the test's event loop for the client tests, and a call recorder.

``kind`` parametrizes a test over REST (uvicorn with inferline's HTTP/1.1
protocol, as ``inferline serve`` runs it) and gRPC on both engines (grpcio and
the native one). :class:`Recorder` stands in for a data plane's ``infer`` to
count the calls that reach it, fail the first ones with 503 / UNAVAILABLE, or
hold them until a gate opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from inferline.dataplane import DataPlane
from inferline.errors import Unavailable
from inferline.protocols.rest_app import build_app
from inferline.security import Guard
from inferline.settings import Settings
from inferline.transport.http1 import HttpProtocol
from inferline.transport.sockets import listen_socket
from tests.protocols import grpc_servers

KINDS = ("rest", "grpcio", "native")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serve(plane: DataPlane, kind: str, guard: Guard | None = None) -> AsyncIterator[str]:
    """A server of ``kind`` over ``plane`` on a free loopback port; yields its URL."""
    if kind != "rest":
        server, address = await grpc_servers.start_server(plane, plane.settings, kind, guard)
        try:
            yield f"grpc://{address}"
        finally:
            await server.stop(None)
        return
    sock = listen_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        build_app(plane, guard=guard),
        http=HttpProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = server.force_exit = True
        await task
        sock.close()


class Recorder:
    """Wraps ``plane.infer``: counts calls, fails the first ``fail`` with 503, waits on ``gate``."""

    def __init__(self, plane: DataPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.fail = 0
        self.gate: asyncio.Event | None = None
        self.held = 0
        self._infer = plane.infer
        monkeypatch.setattr(plane, "infer", self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise Unavailable("injected: come back later")
        if self.gate is not None:
            self.held += 1
            try:
                await self.gate.wait()
            finally:
                self.held -= 1
        return await self._infer(*args, **kwargs)


@pytest.fixture
async def second_plane(settings: Settings) -> AsyncIterator[DataPlane]:
    """Another data plane over the same models: the second endpoint of a balancing test."""
    plane = DataPlane(settings)
    await plane.start()
    yield plane
    await plane.stop()
