"""The two gRPC engines as in-process servers on port 0, for the gRPC test modules.

``engine`` parametrizes a test over grpcio (grpc.aio) and the native HTTP/2
server; both serve the same ``GrpcService`` in the test's event loop.
``grpc_address`` is such a server for the test's data plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from inferline.dataplane import DataPlane
from inferline.protocols import v2_grpc
from inferline.protocols.grpc_native import native_server
from inferline.security import Guard
from inferline.settings import Settings
from inferline.transport.grpc_h2 import Limits
from inferline.transport.sockets import listen_socket

ENGINES = ("grpcio", "native")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def grpc_address(dataplane: DataPlane, engine: str) -> AsyncIterator[str]:
    """``host:port`` of a server of ``engine`` over the test's data plane."""
    server, address = await start_server(dataplane, dataplane.settings, engine)
    yield address
    await server.stop(None)


async def start_server(
    dataplane: DataPlane,
    settings: Settings,
    engine: str = "grpcio",
    guard: Guard | None = None,
    **limits: Any,
) -> tuple[Any, str]:
    """A started server and its ``host:port``; ``await server.stop(None)`` ends it."""
    if engine == "native":
        limit = Limits(settings.grpc_max_message_bytes, **limits)
        server = native_server(dataplane, limit, guard=guard)
        await server.start(listen_socket("127.0.0.1", 0))
        return server, f"127.0.0.1:{server.port}"
    aio = grpc.aio.server(options=v2_grpc.server_options(settings))
    v2_grpc.add_to_server(aio, dataplane, guard)
    port = aio.add_insecure_port("127.0.0.1:0")
    await aio.start()
    return aio, f"127.0.0.1:{port}"
