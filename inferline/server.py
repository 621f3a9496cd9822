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
import signal
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
from inferline.transport.tls import ServerTls

__all__ = ["build_server_app", "run", "server_tls", "start_workers", "uvicorn_config"]

logger = logging.getLogger(__name__)


def build_server_app(
    settings: Settings, dataplane: DataPlane | None = None, tls: ServerTls | None = None
) -> Starlette:
    """The REST app whose lifespan owns the data plane, the registry sync and gRPC.

    With ``model_dir`` set it serves that folder; otherwise it serves what the
    registry says and follows its changes. ``tls`` (see :func:`server_tls`) makes
    gRPC serve TLS.
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
        grpc_server = await _start_grpc(settings, plane, tls)
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


async def _start_grpc(
    settings: Settings, plane: DataPlane, tls: ServerTls | None = None
) -> grpc.aio.Server | GrpcServer | None:
    """The gRPC server of ``settings.grpc_engine``, started in this loop (None: gRPC off)."""
    if settings.grpc_port is None:
        return None
    if settings.grpc_engine == "native":
        native = native_server(plane)
        sock = _listen_socket(settings, settings.grpc_port)
        await native.start(sock, tls.context(["h2"]) if tls is not None else None)
        logger.info("gRPC (native) listening on %s:%d", settings.host, native.port)
        return native
    server = grpc.aio.server(options=v2_grpc.server_options(settings))
    v2_grpc.add_to_server(server, plane)
    address = f"{settings.host}:{settings.grpc_port}"
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, _grpcio_credentials(tls))
    await server.start()
    v2_grpc.batch_grpc_threads()
    logger.info("gRPC (grpcio) listening on %s:%d", settings.host, port)
    return server


def server_tls(settings: Settings) -> ServerTls | None:
    """The process's TLS files (``tls_cert``, ``tls_key``, ``tls_client_ca``), or None."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def _grpcio_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """grpcio's credentials for ``tls``: its fetcher, asked before every handshake,
    hands over the files again after each reload."""

    def configuration() -> grpc.ServerCertificateConfiguration:
        key, cert, ca = tls.pem
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    seen = tls.generation

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal seen
        if tls.generation == seen:
            return None
        seen = tls.generation
        return configuration()

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=tls.client_ca is not None
    )


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


def uvicorn_config(settings: Settings, app: Starlette, tls: ServerTls | None) -> uvicorn.Config:
    """uvicorn serving ``app`` with inferline's HTTP/1.1 protocol, limits and TLS."""
    factory = None
    if tls is not None:

        def factory(*_: Any) -> ssl.SSLContext:
            return tls.context(["http/1.1"])

    return uvicorn.Config(
        app,
        ssl_context_factory=factory,
        loop="none",
        # httptools, one task step and one write per small request; head timeout, connection cap
        http=HttpProtocol.configured(settings.limits),
        lifespan="on",
        access_log=False,
        log_config=None,  # keep configure_logging's JSON handler for uvicorn's own lines
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


async def _serve(settings: Settings) -> None:
    sock = _listen_socket(settings, settings.http_port)
    tls = server_tls(settings)
    scheme = "https" if tls is not None else "http"
    logger.info("REST listening on %s://%s:%d", scheme, settings.host, sock.getsockname()[1])
    config = uvicorn_config(settings, build_server_app(settings, tls=tls), tls)
    if tls is not None:  # new connections get the files' certificate, open ones keep theirs
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, tls.reload)
    _tune_gc()
    await uvicorn.Server(config).serve(sockets=[sock])


def _tune_gc() -> None:
    """Keep the cyclic collector off the request path.

    What is alive now (imported modules, the app) lives as long as the process:
    ``gc.freeze`` takes it out of every later collection, so a full collection only
    scans what requests left behind (it scanned some 200,000 startup objects,
    which set the p99 under load). A larger first-generation threshold makes the
    young collections rarer; each request allocates dozens of containers.

    Rare full collections must not be what frees cancelled work: the native gRPC
    engine breaks the cycle a cancelled handler sits in (``Output.task_done``), and
    ``test_cancelled_handlers_are_freed_without_the_cyclic_collector`` checks it with
    the collector off.
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
