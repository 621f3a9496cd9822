"""Assembly: the ASGI app, the gRPC server and their lifespan; no business logic.

One process runs REST (uvicorn) and gRPC (inferline's own HTTP/2 server, or
grpc.aio with ``grpc_engine="grpcio"``) in one event loop around one
:class:`DataPlane`. ``workers > 1`` starts that many such processes, each binding
the same ports with SO_REUSEPORT so the kernel spreads connections.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette

from inferline.dataplane import DataPlane
from inferline.errors import ModelNotFound, SettingsError, Unavailable
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
from inferline.security import Guard
from inferline.security.exposure import check_exposure, startup_message
from inferline.served import ServedModel
from inferline.settings import ModelMonitoring, Settings
from inferline.settings.security import REVEAL, redact_url
from inferline.transport.grpc_h2 import GrpcServer
from inferline.transport.http1 import HttpProtocol
from inferline.transport.sockets import listen_socket
from inferline.transport.tls import ServerTls

__all__ = [
    "build_server_app",
    "preflight",
    "run",
    "server_tls",
    "start_workers",
    "uvicorn_config",
]

logger = logging.getLogger(__name__)


def build_server_app(
    settings: Settings,
    *,
    grpc_socket: socket.socket | None = None,
    tls: ServerTls | None = None,
) -> Starlette:
    """The REST app whose lifespan owns the data plane, the registry sync and gRPC.

    With ``model_dir`` set it serves that folder; otherwise it serves what the
    registry says and follows its changes. The data plane is built with every
    observer it reports to (telemetry's, then the monitor), and never rewired.
    ``grpc_socket`` is the native gRPC server's listening socket when the caller
    bound it already (``inferline serve`` binds both ports before any model loads);
    ``tls`` (see :func:`server_tls`) makes gRPC serve TLS.
    """
    telemetry = Telemetry(settings)
    guard = Guard(settings, telemetry.metrics)
    registry = None
    if settings.model_dir is None:
        registry = Registry(settings.registry_database, settings.artifact_root)
    # The monitor asks the plane about models only once requests flow: after it is built.
    monitor = _monitor(settings, registry, lambda name, version: plane.resolve(name, version))
    plane = DataPlane(
        settings, observers=telemetry.observers(*([monitor] if monitor is not None else []))
    )
    sync = None
    if registry is not None:
        sync = RegistrySync(registry, plane, settings.registry_poll_seconds)
    if monitor is not None and telemetry.metrics is not None:
        telemetry.metrics.add_collector(MonitorCollector(monitor))
        monitor.store.on_drop = telemetry.metrics.feedback_dropped.inc

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await guard.start()
        logger.log(*startup_message(settings, guard))
        _log_source(settings)
        await plane.start(scan=sync is None)
        await telemetry.start(plane)
        if sync is not None:
            await sync.start()
        if monitor is not None:
            await monitor.start()
        grpc_server = await _start_grpc(settings, plane, guard, grpc_socket, tls)
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
            await guard.stop()
            if sync is not None:
                sync.registry.close()

    return build_app(
        plane,
        lifespan=lifespan,
        sync=sync,
        metrics=telemetry.metrics,
        monitor=monitor,
        guard=guard,
    )


def preflight(settings: Settings) -> None:
    """Refuse to serve without authentication beyond loopback (ValueError says why), or
    with a registry (which holds the API keys) that cannot be opened (SettingsError)."""
    try:
        check_exposure(settings, Guard(settings))
    except Unavailable as exc:  # the registry, looked up for API keys
        raise SettingsError("registry_url", exc.message) from exc


def _log_source(settings: Settings) -> None:
    if settings.model_dir is not None:
        logger.info("serving the model folder %s", settings.model_dir)
    else:
        logger.info(
            "serving the registry %s (artifacts in %s)",
            redact_url(settings.registry_database),
            settings.artifact_root,
        )


def _open_registry(settings: Settings) -> None:
    """Open the registry once (connect, create or upgrade its tables), before any model
    loads: an unreachable or unusable one is a :class:`SettingsError` naming registry_url."""
    registry = Registry(settings.registry_database, settings.artifact_root)
    try:
        registry.generation()
    except Unavailable as exc:
        raise SettingsError("registry_url", exc.message) from exc  # its URL redacted
    finally:
        registry.close()


async def _start_grpc(
    settings: Settings,
    plane: DataPlane,
    guard: Guard | None = None,
    sock: socket.socket | None = None,
    tls: ServerTls | None = None,
) -> grpc.aio.Server | GrpcServer | None:
    """The gRPC server of ``settings.grpc_engine``, started in this loop (None: gRPC off)."""
    if settings.grpc_port is None:
        return None
    if settings.grpc_engine == "native":
        native = native_server(plane, guard=guard)
        await native.start(
            sock or _bind(settings, "grpc_port", settings.grpc_port),
            tls.context(["h2"]) if tls is not None else None,
        )
        logger.info("gRPC (native) listening on %s:%d", settings.host, native.port)
        return native
    server = grpc.aio.server(options=v2_grpc.server_options(settings))
    v2_grpc.add_to_server(server, plane, guard)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, _grpcio_credentials(tls))
    except RuntimeError as exc:  # grpcio says only "Failed to bind"
        raise SettingsError("grpc_port", f"cannot listen on {settings.grpc_port}") from exc
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


def _monitor(
    settings: Settings,
    registry: Registry | None,
    resolve: Callable[[str, str], ServedModel],
) -> Monitor | None:
    """Drift, quality and alerts over every request; profiles from the registry or folder."""
    if not settings.monitoring.enabled:
        return None
    if registry is not None:
        profiles = registry_profiles(registry)
    else:
        profiles = folder_profiles(settings.model_dir or settings.home)

    def hint(model: str, version: str) -> ModelMonitoring | None:
        try:
            return resolve(model, version).model.settings.monitoring
        except ModelNotFound:
            return None

    return Monitor(settings.monitoring, profiles, hint)


def _bind(settings: Settings, setting: str, port: int) -> socket.socket:
    """A listening socket; SO_REUSEPORT with several workers, so the kernel spreads
    connections between them. A refusal is a :class:`SettingsError` naming ``setting``
    (or ``host``)."""
    try:
        sock = listen_socket(settings.host, port, reuse_port=settings.workers > 1)
    except socket.gaierror as exc:
        raise SettingsError("host", f"cannot resolve {settings.host!r}: {exc.strerror}") from exc
    except OSError as exc:
        where = f"{settings.host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(setting, f"{where} is in use by another program") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise SettingsError(
                "host", f"{settings.host} is not an address of this machine"
            ) from exc
        raise SettingsError(setting, f"cannot listen on {where}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def _bind_grpc(settings: Settings) -> socket.socket | None:
    """The native gRPC server's socket, bound now; for grpcio, a check that the port is free."""
    if settings.grpc_port is None:
        return None
    sock = _bind(settings, "grpc_port", settings.grpc_port)
    if settings.grpc_engine == "native":
        return sock
    sock.close()  # grpcio binds its own; a program taking the port meanwhile still fails
    return None


async def _serve(settings: Settings) -> None:
    if settings.model_dir is None:
        await asyncio.to_thread(_open_registry, settings)
    sock = _bind(settings, "http_port", settings.http_port)
    try:
        grpc_socket = _bind_grpc(settings)
    except SettingsError:
        sock.close()
        raise
    tls = server_tls(settings)
    scheme = "https" if tls is not None else "http"
    logger.info("REST listening on %s://%s:%d", scheme, settings.host, sock.getsockname()[1])
    app = build_server_app(settings, grpc_socket=grpc_socket, tls=tls)
    config = uvicorn_config(settings, app, tls)
    if tls is not None:  # new connections get the files' certificate, open ones keep theirs
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, tls.reload)
    _tune_gc()
    await uvicorn.Server(config).serve(sockets=[sock])


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
    try:
        _run_one(settings)
    except SettingsError as exc:  # one line, as the CLI prints it; the parent exits 2 too
        print(f"inferline: {exc.message}", file=sys.stderr)
        sys.exit(2)


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)


def run(settings: Settings) -> None:
    """Serve in this process until SIGINT/SIGTERM (uvicorn handles both)."""
    _configure_logging(settings)
    _run_one(settings)


def start_workers(settings: Settings) -> list[multiprocessing.process.BaseProcess]:
    """Start ``settings.workers`` server processes on the same ports; the caller supervises."""
    _configure_logging(settings)
    if settings.http_port == 0:
        raise SettingsError("http_port", "--workers > 1 needs a fixed port (not 0)")
    if settings.grpc_port == 0:
        raise SettingsError("grpc_port", "--workers > 1 needs a fixed port (not 0)")
    # Refuse a port in use here, once, rather than in every worker.
    _bind(settings, "http_port", settings.http_port).close()
    grpc_socket = _bind_grpc(settings)
    if grpc_socket is not None:
        grpc_socket.close()
    if settings.metrics:
        # Each worker writes its metrics here; a scrape of any worker merges them all.
        folder = tempfile.mkdtemp(prefix="inferline-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    context = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json(context=REVEAL)  # workers need the secrets
    workers: list[multiprocessing.process.BaseProcess] = [
        context.Process(target=_worker, args=(payload,), name=f"inferline-worker-{i}")
        for i in range(settings.workers)
    ]
    for process in workers:
        process.start()
    return workers
