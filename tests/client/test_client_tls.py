"""The client over TLS and mutual TLS: https:// to uvicorn, grpcs:// to grpcio.

A throwaway CA signs a server certificate for 127.0.0.1 and a client
certificate; the servers demand the client's (mTLS).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inferline.client import AsyncClient
from inferline.dataplane import DataPlane
from inferline.errors import Unavailable
from inferline.protocols import v2_grpc
from inferline.protocols.rest_app import build_app
from inferline.transport.http1 import HttpProtocol
from inferline.transport.sockets import listen_socket

Pem = tuple[Path, Path]  # (certificate, key)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    folder: Path, common: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Pem]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer[0].subject if issuer else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    paths = folder / f"{common}.crt", folder / f"{common}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, paths


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Pem]:
    ca_cert, ca_key, ca = _issue(tmp_path, "ca", None)
    *_, server = _issue(tmp_path, "server", (ca_cert, ca_key))
    *_, client = _issue(tmp_path, "client", (ca_cert, ca_key))
    return {"ca": ca, "server": server, "client": client}


@asynccontextmanager
async def tls_server(plane: DataPlane, kind: str, pki: dict[str, Pem]) -> AsyncIterator[str]:
    (ca, _), (cert, key) = pki["ca"], pki["server"]
    if kind == "grpc":
        server = grpc.aio.server()
        v2_grpc.add_to_server(server, plane)
        credentials = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=ca.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            yield f"grpcs://127.0.0.1:{port}"
        finally:
            await server.stop(None)
        return
    sock = listen_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        build_app(plane),
        http=HttpProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started and not task.done():
        await asyncio.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = uv.force_exit = True
        await task
        sock.close()


@pytest.mark.parametrize("kind", ["rest", "grpc"])
async def test_mutual_tls(dataplane: DataPlane, pki: dict[str, Pem], kind: str) -> None:
    rows = np.zeros((2, 20), np.float32)
    (ca, _), (cert, key) = pki["ca"], pki["client"]
    async with tls_server(dataplane, kind, pki) as url:
        async with AsyncClient(url, tls_ca=ca, tls_cert=cert, tls_key=key) as client:
            result = await client.infer("demo", {"input": rows})
        assert result.outputs["label"].shape == (2,)
        # Without the client certificate the server refuses the handshake.
        async with AsyncClient(url, tls_ca=ca, retries=1, backoff=0.001) as anonymous:
            with pytest.raises(Unavailable):
                await anonymous.infer("demo", {"input": rows})
        # Without the CA the client refuses the server's certificate.
        async with AsyncClient(url, tls_cert=cert, tls_key=key, retries=0) as untrusting:
            with pytest.raises(Unavailable):
                await untrusting.infer("demo", {"input": rows})
