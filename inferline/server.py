"""Assembly: the ASGI app, the gRPC server and their lifespan; no business logic.

One process runs REST (uvicorn) and gRPC (inferline's own HTTP/2 server, or
grpc.aio with ``grpc_engine="grpcio"``) in one event loop around one
:class:`DataPlane`. ``workers > 1`` starts that many such processes, each binding
the same ports with SO_REUSEPORT so the kernel spreads connections.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import uvicorn
from starlette.applications import Starlette

from inferline.dataplane import DataPlane
from inferline.errors import ModelNotFound
from inferline.lifecycle import RegistrySync
from inferline.monitoring.logs import configure_logging
from inferline.monitoring.metrics import MULTIPROC_ENV
from inferline.monitoring.monitor import Monitor, folder_profiles, registry_profiles
from inferline.monitoring.report import MonitorCollector
from inferline.monitoring.telemetry import Telemetry
from inferline.protocols import v2_grpc
from inferline.protocols.grpc_native import native_server
from inferline.protocols.rest_app import build_app
from inferline.registry.store import Registry
from inferline.settings import ModelMonitoring, Settings
from inferline.transport.grpc_h2 import GrpcServer
from inferline.transport.http1 import HttpProtocol
from inferline.transport.sockets import listen_socket

__all__ = ["build_server_app", "run", "start_workers"]

logger = logging.getLogger(__name__)


def build_server_app(settings: Settings, dataplane: DataPlane | None = None) -> Starlette:
    """The REST app whose lifespan owns the data plane, the registry sync and gRPC.

    With ``model_dir`` set it serves that folder; otherwise it serves what the
    registry says and follows its changes.
    """
    plane = dataplane or DataPlane(settings)
    telemetry = Telemetry(settings)
    telemetry.attach(plane)
    sync = None
    if settings.model_dir is None:
        registry = Registry(settings.registry_database, settings.artifact_root)
        sync = RegistrySync(registry, plane, settings.registry_poll_seconds)
    monitor = _monitor(settings, plane, sync)
    if monitor is not None and telemetry.metrics is not None:
        telemetry.metrics.add_collector(MonitorCollector(monitor))
        monitor.store.on_drop = telemetry.metrics.feedback_dropped.inc

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await plane.start(scan=sync is None)
        await telemetry.start()
        if sync is not None:
            await sync.start()
        if monitor is not None:
            await monitor.start()
        grpc_server = await _start_grpc(settings, plane)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            if monitor is not None:
                await monitor.stop()
            if sync is not None:
                await sync.stop()
            await plane.stop()
            await telemetry.stop()
            if sync is not None:
                sync.registry.close()

    return build_app(
        plane, lifespan=lifespan, sync=sync, metrics=telemetry.metrics, monitor=monitor
    )


async def _start_grpc(settings: Settings, plane: DataPlane) -> grpc.aio.Server | GrpcServer | None:
    """The gRPC server of ``settings.grpc_engine``, started in this loop (None: gRPC off)."""
    if settings.grpc_port is None:
        return None
    if settings.grpc_engine == "native":
        native = native_server(plane)
        sock = _listen_socket(settings, settings.grpc_port)
        await native.start(sock)
        logger.info("gRPC (native) listening on %s:%d", settings.host, native.port)
        return native
    server = grpc.aio.server(options=v2_grpc.server_options(settings))
    v2_grpc.add_to_server(server, plane)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    v2_grpc.batch_grpc_threads()
    logger.info("gRPC (grpcio) listening on %s:%d", settings.host, port)
    return server


def _monitor(settings: Settings, plane: DataPlane, sync: RegistrySync | None) -> Monitor | None:
    """Drift, quality and alerts over every request; profiles from the registry or folder."""
    if not settings.monitoring.enabled:
        return None
    if sync is not None:
        profiles = registry_profiles(sync.registry)
    else:
        profiles = folder_profiles(settings.model_dir or settings.home)

    def hint(model: str, version: str) -> ModelMonitoring | None:
        try:
            return plane.resolve(model, version).model.settings.monitoring
        except ModelNotFound:
            return None

    monitor = Monitor(settings.monitoring, profiles, hint)
    plane.observers.append(monitor)
    return monitor


def _listen_socket(settings: Settings, port: int) -> socket.socket:
    """A listening socket; SO_REUSEPORT with several workers, so the kernel spreads
    connections between them."""
    sock = listen_socket(settings.host, port, reuse_port=settings.workers > 1)
    sock.set_inheritable(True)
    return sock


async def _serve(settings: Settings) -> None:
    sock = _listen_socket(settings, settings.http_port)
    logger.info("REST listening on http://%s:%d", settings.host, sock.getsockname()[1])
    config = uvicorn.Config(
        build_server_app(settings),
        loop="none",
        # httptools, one task step and one write per small request; head timeout, connection cap
        http=HttpProtocol.configured(settings.limits),
        lifespan="on",
        access_log=False,
        log_config=None,  # keep configure_logging's JSON handler for uvicorn's own lines
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    _tune_gc()
    await uvicorn.Server(config).serve(sockets=[sock])


def _tune_gc() -> None:
    """Keep the cyclic collector off the request path.

    What is alive now (imported modules, the app) lives as long as the process:
    ``gc.freeze`` takes it out of every later collection, so a full collection only
    scans what requests left behind (it scanned some 200,000 startup objects,
    which set the p99 under load). A larger first-generation threshold makes the
    young collections rarer; each request allocates dozens of containers.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _run_one(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_serve(settings))
    else:
        uvloop.run(_serve(settings))


def _worker(settings_json: str) -> None:
    settings = Settings.model_validate_json(settings_json)
    _configure_logging(settings)
    _run_one(settings)


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)


def run(settings: Settings) -> None:
    """Serve in this process until SIGINT/SIGTERM (uvicorn handles both)."""
    _configure_logging(settings)
    _run_one(settings)


def start_workers(settings: Settings) -> list[multiprocessing.process.BaseProcess]:
    """Start ``settings.workers`` server processes on the same ports; the caller supervises."""
    _configure_logging(settings)
    if settings.http_port == 0 or settings.grpc_port == 0:
        raise ValueError("--workers > 1 needs fixed ports (not 0)")
    if settings.metrics:
        # Each worker writes its metrics here; a scrape of any worker merges them all.
        folder = tempfile.mkdtemp(prefix="inferline-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    context = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json()
    workers: list[multiprocessing.process.BaseProcess] = [
        context.Process(target=_worker, args=(payload,), name=f"inferline-worker-{i}")
        for i in range(settings.workers)
    ]
    for process in workers:
        process.start()
    return workers
