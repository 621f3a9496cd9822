"""A client that hangs up cancels its inference, on inferline's HTTP/1.1 transport.

A real uvicorn server with ``HttpProtocol`` in the test's loop serves the REST
app over a data plane whose model waits on a gate the test holds, so the
model is busy for as long as the test says: what is asserted is what the
server did (calls, cancellations, queue depth, counted statuses), never how
long anything took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from inferline.dataplane import DataPlane
from inferline.monitoring.metrics import Metrics
from inferline.monitoring.telemetry import Observers
from inferline.protocols.rest_app import build_app
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import BatchingSettings, ModelSettings, Settings, TensorSpec
from inferline.transport.http1 import HttpProtocol
from tests.transport.http1_server import poll, read_until

CLIENTS = 20  #: clients that send a request and hang up


class Gated(Model):
    """Answers ``y = x[:, 0]`` once the test opens ``gate``; records calls and cancels."""

    def __init__(self, name: str, batching: BatchingSettings) -> None:
        settings = ModelSettings(
            name=name,
            runtime="python",
            inputs=[TensorSpec(name="x", datatype="FP64", shape=[-1, 1])],
            outputs=[TensorSpec(name="y", datatype="FP64", shape=[-1])],
            batching=batching,
            warmup_requests=0,
        )
        super().__init__(settings, "1", Path("."))
        self.gate = asyncio.Event()
        self.calls: list[int] = []  # rows per call
        self.cancelled = 0

    async def load(self) -> None:
        return None

    async def predict(self, inputs: Inputs) -> Outputs:
        self.calls.append(len(inputs["x"]))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"y": inputs["x"][:, 0]}


class Served:
    def __init__(self, plane: DataPlane, metrics: Metrics, server: uvicorn.Server, port: int):
        self.plane = plane
        self.metrics = metrics
        self.server = server
        self.port = port

    @property
    def tasks(self) -> int:
        """Requests the server is still running the app for."""
        return len(self.server.server_state.tasks)

    def counted(self, model: str, status: int) -> float:
        self.metrics.flush()
        labels = {"model": model, "version": "1", "protocol": "rest", "status": str(status)}
        return self.metrics.registry.get_sample_value("inferline_requests_total", labels) or 0.0

    async def send(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection and send one complete infer request on it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [2.5]}]}
        ).encode()
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        writer.write(head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        return reader, writer


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics(CollectorRegistry())
    plane = DataPlane(Settings(), observers=Observers((metrics,), metrics.observe_batch))
    await plane.start(scan=False)
    one_at_a_time = BatchingSettings(
        max_batch_size=1, max_queue_delay_ms=0, max_concurrent_batches=1, max_queue_size=1000
    )
    for model in (Gated("batched", one_at_a_time), Gated("direct", BatchingSettings())):
        await model.bind(plane.executor)
        await plane.add(model)
    config = uvicorn.Config(
        build_app(plane), http=HttpProtocol, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await poll(lambda: server.started, "uvicorn to start")
    try:
        yield Served(plane, metrics, server, sock.getsockname()[1])
    finally:
        for name in ("batched", "direct"):
            gated(plane, name).gate.set()
        server.should_exit = server.force_exit = True
        await task
        sock.close()
        await plane.stop()


def gated(plane: DataPlane, name: str) -> Gated:
    model = plane.resolve(name, None).model
    assert isinstance(model, Gated)
    return model


def queued(plane: DataPlane) -> Any:
    return plane.snapshot()["queue_depth"][("batched", "1")]


async def test_clients_that_hang_up_leave_the_queue_and_never_reach_the_model(
    served: Served,
) -> None:
    model = gated(served.plane, "batched")
    # One patient client holds the model's only batch slot...
    reader, writer = await served.send("/v2/models/batched/infer")
    await poll(lambda: model.calls == [1], "the first request to reach the model")
    # ...while others queue behind it, then hang up.
    impatient = [await served.send("/v2/models/batched/infer") for _ in range(CLIENTS)]
    await poll(lambda: queued(served.plane) == CLIENTS, "the requests to queue")
    for _, gone in impatient:
        gone.close()

    # Their requests are cancelled at once: out of the queue, their app calls ended,
    # counted as 499 (client closed request), while the model is still busy.
    await poll(lambda: queued(served.plane) == 0, "the queue to drop the cancelled requests")
    await poll(lambda: served.tasks == 1, "the cancelled requests' app calls to end")
    assert served.plane.snapshot()["inflight"]["batched"] == 1
    assert served.counted("batched", 499) == CLIENTS

    model.gate.set()
    answer = await read_until(reader, lambda data: data.endswith(b"}"))
    assert answer.startswith(b"HTTP/1.1 200 OK")
    writer.close()
    await poll(lambda: served.counted("batched", 200) == 1, "the answer to be counted")
    assert model.calls == [1]  # no batch ran for a client that had gone
    assert served.plane.snapshot()["inflight"]["batched"] == 0


async def test_a_hang_up_cancels_the_model_call_under_way(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    model = gated(served.plane, "direct")
    _, writer = await served.send("/v2/models/direct/infer")
    await poll(lambda: model.calls == [1], "the request to reach the model")
    writer.close()
    await poll(lambda: model.cancelled == 1, "the model to see the cancellation")
    await poll(lambda: served.tasks == 0, "the app call to end")
    assert served.plane.snapshot()["inflight"]["direct"] == 0
    assert served.counted("direct", 499) == 1
    assert served.counted("direct", 200) == 0
    # nothing failed: no error logged, one debug line
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r.getMessage() for r in caplog.records if "went away" in r.getMessage()] == [
        "client went away; its request to /v2/models/direct/infer was cancelled"
    ]


@pytest.mark.parametrize(
    "path",
    ["/v1/models/direct:predict", "/models/direct/invocations"],
    ids=["tfserving", "mlflow"],
)
async def test_every_inference_protocol_is_cancelled(served: Served, path: str) -> None:
    model = gated(served.plane, "direct")
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    body = b'{"instances": [[2.5]]}' if path.startswith("/v1") else b'{"inputs": [[2.5]]}'
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n".encode()
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )
    await poll(lambda: model.calls == [1], "the request to reach the model")
    writer.close()
    await poll(lambda: model.cancelled == 1, "the model to see the cancellation")
    await poll(lambda: served.tasks == 0, "the app call to end")
    protocol = "tfserving" if path.startswith("/v1") else "mlflow"
    served.metrics.flush()
    labels = {"model": "direct", "version": "1", "protocol": protocol, "status": "499"}
    assert served.metrics.registry.get_sample_value("inferline_requests_total", labels) == 1
    assert model.calls == [1]
