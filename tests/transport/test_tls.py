"""TLS on REST and on both gRPC engines: certificates from files, mutual TLS, reload.

The server is the one ``inferline serve`` runs (``uvicorn_config`` and the app's
lifespan starting gRPC), in the test's loop, on free ports; the certificates are
made on the spot (``pki.py``). Clients: httpx, grpc.aio, and tritonclient with
``ssl=True`` over HTTP and gRPC, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http as triton_http
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.server import build_server_app, uvicorn_config
from inferline.settings import Settings
from inferline.transport.sockets import listen_socket
from inferline.transport.tls import ServerTls
from tests.conftest import free_port, start_server, stop_server
from tests.transport.pki import Authority, Issued


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder, "first")
        self.server = self.ca.issue("server")
        self.other_ca = Authority(folder, "second")
        self.other_server = self.other_ca.issue("server-2")
        self.client_ca = Authority(folder, "clients")
        self.client = self.client_ca.issue("client", client=True)
        self.stranger = Authority(folder, "strangers").issue("stranger", client=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class Served:
    def __init__(self, tls: ServerTls, http_port: int, grpc_port: int) -> None:
        self.tls = tls
        self.url = f"https://127.0.0.1:{http_port}"
        self.http_address = f"127.0.0.1:{http_port}"
        self.grpc_address = f"localhost:{grpc_port}"
        self.grpc_port = grpc_port


@pytest.fixture(params=["native", "grpcio"])
async def start(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path: Path, pki: Pki
) -> AsyncIterator[Callable[..., Any]]:
    """``await start(client_ca=None)``: REST and gRPC (engine ``request.param``) over TLS,
    from copies of the first CA's server certificate (tests may overwrite them)."""
    engine = str(request.param)
    stops: list[Any] = []

    async def run(client_ca: Path | None = None) -> Served:
        cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
        shutil.copy(pki.server.cert, cert)
        shutil.copy(pki.server.key, key)
        grpc_port = free_port()
        settings = Settings(
            model_dir=model_dir,
            http_port=0,
            grpc_port=grpc_port,
            grpc_engine=engine,  # type: ignore[arg-type]
            tls_cert=cert,
            tls_key=key,
            tls_client_ca=client_ca,
            metrics=False,
        )
        tls = ServerTls(cert, key, client_ca)
        server = uvicorn.Server(uvicorn_config(settings, build_server_app(settings, tls=tls), tls))
        sock = listen_socket("127.0.0.1", 0)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(2000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the server did not start"

        async def stop() -> None:
            server.should_exit = True
            await task
            sock.close()

        stops.append(stop)
        return Served(tls, sock.getsockname()[1], grpc_port)

    yield run
    for stop in stops:
        await stop()


def client_context(ca: Path, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def grpc_credentials(ca: Path, client: Issued | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca.read_bytes())
    return grpc.ssl_channel_credentials(
        ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )


async def grpc_serving(address: str, credentials: grpc.ChannelCredentials) -> bool:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_rest_and_grpc_over_tls(start: Any, pki: Pki) -> None:
    served = await start()
    async with httpx.AsyncClient(verify=client_context(pki.ca.path)) as client:
        assert (await client.get(f"{served.url}/v2/health/ready")).status_code == 200
    assert await grpc_serving(served.grpc_address, grpc_credentials(pki.ca.path))
    async with httpx.AsyncClient() as plain:  # cleartext to the TLS port: no answer
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://{served.http_address}/v2/health/ready")


async def test_grpc_offers_alpn_h2(start: Any, pki: Pki) -> None:
    served = await start()
    context = client_context(pki.ca.path)
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", served.grpc_port, ssl=context, server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    assert (await reader.readexactly(9))[3] == 4  # the server's SETTINGS: HTTP/2 spoken
    writer.transport.abort()


# geventhttpclient (under tritonclient.http) still calls the deprecated ssl.match_hostname.
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
async def test_tritonclient_with_ssl(start: Any, pki: Pki) -> None:
    served = await start()
    grpc_client = triton_grpc.InferenceServerClient(
        served.grpc_address, ssl=True, root_certificates=str(pki.ca.path)
    )
    try:
        assert await grpc_client.is_server_live()
        assert await grpc_client.is_model_ready("demo")
    finally:
        await grpc_client.close()

    def over_http() -> bool:
        import gevent.ssl

        context = gevent.ssl.create_default_context(cafile=str(pki.ca.path))
        client = triton_http.InferenceServerClient(
            served.http_address, ssl=True, ssl_context_factory=lambda *_, **__: context
        )
        try:
            return bool(client.is_server_live() and client.is_model_ready("demo"))
        finally:
            client.close()

    assert await asyncio.to_thread(over_http)


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(start: Any, pki: Pki) -> None:
    served = await start(client_ca=pki.client_ca.path)
    url = f"{served.url}/v2/health/ready"
    async with httpx.AsyncClient(verify=client_context(pki.ca.path, pki.client)) as client:
        assert (await client.get(url)).status_code == 200
    for nobody in (None, pki.stranger):
        async with httpx.AsyncClient(verify=client_context(pki.ca.path, nobody)) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(url)
    assert await grpc_serving(served.grpc_address, grpc_credentials(pki.ca.path, pki.client))
    for nobody in (None, pki.stranger):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await grpc_serving(served.grpc_address, grpc_credentials(pki.ca.path, nobody))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_reload_serves_the_new_certificate_and_keeps_open_connections(
    start: Any, pki: Pki
) -> None:
    served = await start()
    url = f"{served.url}/v2/health/ready"
    old_trust = grpc_credentials(pki.ca.path)
    async with (
        httpx.AsyncClient(verify=client_context(pki.ca.path)) as kept,
        grpc.aio.secure_channel(served.grpc_address, old_trust) as kept_channel,
    ):
        assert (await kept.get(url)).status_code == 200
        kept_stub = health_pb2_grpc.HealthStub(kept_channel)
        await kept_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        # The files change (a certificate from another CA), then SIGHUP's reload.
        shutil.copy(pki.other_server.cert, served.tls.cert)
        shutil.copy(pki.other_server.key, served.tls.key)
        assert served.tls.reload()
        # New connections get the new certificate: only the second CA's trust works.
        async with httpx.AsyncClient(verify=client_context(pki.other_ca.path)) as fresh:
            assert (await fresh.get(url)).status_code == 200
        async with httpx.AsyncClient(verify=client_context(pki.ca.path)) as stale:
            with pytest.raises(httpx.ConnectError):
                await stale.get(url)
        assert await grpc_serving(served.grpc_address, grpc_credentials(pki.other_ca.path))
        # Connections made before the reload go on.
        assert (await kept.get(url)).status_code == 200
        reply = await kept_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_bad_reload_keeps_the_current_certificate(start: Any, pki: Pki) -> None:
    served = await start()
    served.tls.key.write_bytes(pki.other_server.key.read_bytes())  # not the cert's key
    assert not served.tls.reload()
    async with httpx.AsyncClient(verify=client_context(pki.ca.path)) as client:
        assert (await client.get(f"{served.url}/v2/health/ready")).status_code == 200


def test_tls_settings_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        Settings(tls_cert=tmp_path / "x.pem")
    with pytest.raises(ValueError, match="tls_client_ca needs"):
        Settings(tls_client_ca=tmp_path / "ca.pem")


@pytest.mark.e2e
def test_sighup_reloads_the_certificate_of_a_running_server(
    model_dir: Path, tmp_path: Path, pki: Pki
) -> None:
    """``inferline serve --tls-cert … --tls-key …``, then new files and ``kill -HUP``."""
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    flags = ("--tls-cert", str(cert), "--tls-key", str(key))
    server = start_server(model_dir, tmp_path / "log", *flags, verify=pki.ca.path)
    try:
        url = f"https://{server.http_url}/v2/health/ready"
        with httpx.Client(verify=client_context(pki.ca.path)) as kept:
            assert kept.get(url).status_code == 200
            shutil.copy(pki.other_server.cert, cert)
            shutil.copy(pki.other_server.key, key)
            server.process.send_signal(signal.SIGHUP)
            for _ in range(500):  # until a new connection sees the new certificate
                with contextlib.suppress(httpx.ConnectError):
                    fresh = httpx.get(url, verify=client_context(pki.other_ca.path))
                    assert fresh.status_code == 200
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the new certificate was never served")
            assert kept.get(url).status_code == 200  # the connection from before goes on
        assert server.process.poll() is None
    finally:
        stop_server(server)
