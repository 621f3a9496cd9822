"""Shared fixtures: service markers, model folders, the in-process app and the one e2e server."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferline.cli.demo import write_demo_model
from inferline.dataplane import DataPlane
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings

SERVICES = {
    "redis": (6379, "redis-server --daemonize yes --port 6379 --save ''"),
    "postgres": (5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
    "nats": (4222, "nats-server -a 127.0.0.1 -p 4222 -js &"),
}

# A python-runtime model with one input of each datatype family the tests speak.
KITCHEN_SETTINGS = """\
runtime: python
inputs:
  - {name: fp, datatype: FP32, shape: [-1, 4]}
  - {name: i64, datatype: INT64, shape: [-1, 2]}
  - {name: flag, datatype: BOOL, shape: [-1, 1]}
  - {name: text, datatype: BYTES, shape: [-1, 1]}
outputs:
  - {name: fp_sum, datatype: FP32, shape: [-1]}
  - {name: i64_double, datatype: INT64, shape: [-1, 2]}
  - {name: flag_not, datatype: BOOL, shape: [-1, 1]}
  - {name: text_upper, datatype: BYTES, shape: [-1, 1]}
"""

KITCHEN_CODE = """\
import numpy as np


class Model:
    def predict(self, inputs):
        upper = np.array([v.upper() for v in inputs["text"].ravel()], dtype=object)
        return {
            "fp_sum": inputs["fp"].sum(axis=1, dtype=np.float32),
            "i64_double": inputs["i64"] * 2,
            "flag_not": ~inputs["flag"],
            "text_upper": upper.reshape(inputs["text"].shape),
        }
"""

RANGED_SETTINGS = """\
runtime: python
inputs:
  - {name: x, datatype: FP64, shape: [-1, 3], min: [0, 0, -1], max: [1, 10, 1]}
outputs:
  - {name: y, datatype: FP64, shape: [-1]}
"""

RANGED_CODE = """\
class Model:
    def predict(self, inputs):
        return {"y": inputs["x"].sum(axis=1)}
"""


def kitchen_reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the kitchen model must answer, computed here and not by the server."""
    text = inputs["text"]
    return {
        "fp_sum": inputs["fp"].sum(axis=1, dtype=np.float32),
        "i64_double": inputs["i64"] * 2,
        "flag_not": ~inputs["flag"],
        "text_upper": np.array([v.upper() for v in text.ravel()], dtype=object).reshape(text.shape),
    }


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep tests (and the servers they start) out of the user's ~/.inferline: its
    registry database holds API keys, and a test must neither read nor migrate it."""
    if os.environ.get("INFERLINE_HOME"):
        yield
        return
    os.environ["INFERLINE_HOME"] = str(tmp_path_factory.mktemp("inferline-home"))
    try:
        yield
    finally:
        os.environ.pop("INFERLINE_HOME", None)


def _write_python_model(root: Path, name: str, settings: str, code: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "model-settings.yaml").write_text(settings)
    (root / name / "1" / "model.py").write_text(code)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: the demo ONNX forest, the kitchen model and the ranged model."""
    root = tmp_path_factory.mktemp("models")
    write_demo_model(root)
    _write_python_model(root, "kitchen", KITCHEN_SETTINGS, KITCHEN_CODE)
    _write_python_model(root, "ranged", RANGED_SETTINGS, RANGED_CODE)
    return root


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(model_dir=model_dir, http_port=0, grpc_port=0, max_body_bytes=1024 * 1024)


@pytest.fixture
async def dataplane(settings: Settings) -> AsyncIterator[DataPlane]:
    plane = DataPlane(settings)
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def rest(dataplane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the REST app in process."""
    transport = httpx.ASGITransport(app=build_app(dataplane))
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, http_port: int, grpc_port: int, process: subprocess.Popen[bytes]) -> None:
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.process = process
        self.http_url = f"127.0.0.1:{http_port}"
        self.grpc_url = f"127.0.0.1:{grpc_port}"


def start_server(
    model_dir: Path | None,
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    verify: Path | None = None,
) -> ServerProcess:
    """Start ``inferline serve`` on free ports and wait until it reports ready.

    With ``model_dir`` None it serves the registry that ``env`` points at; with
    ``verify`` (a CA file) it serves HTTPS, checked against that CA.
    """
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "inferline", "serve"]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = ServerProcess(http_port, grpc_port, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"inferline serve exited early:\n{log.read_text()}")
        try:
            scheme, trust = "http", True
            if verify is not None:
                scheme, trust = "https", ssl.create_default_context(cafile=str(verify))
            ready = f"{scheme}://{server.http_url}/v2/health/ready"
            if httpx.get(ready, timeout=1, verify=trust).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"inferline serve did not become ready:\n{log.read_text()}")


def stop_server(server: ServerProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The one e2e fixture: a real ``inferline serve`` process on free ports."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    process = start_server(model_dir, log)
    yield process
    stop_server(process)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests whose service is down, with how to start it; under CI=true, fail instead."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    for item in items:
        for marker, (port, start) in SERVICES.items():
            if marker in item.keywords and not _port_open(port):
                message = f"{marker} is not running on 127.0.0.1:{port}; start it with: {start}"
                if in_ci:
                    item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                    item.user_properties.append(("missing_service", message))
                else:
                    item.add_marker(pytest.mark.skip(reason=message))


@pytest.fixture
def _fail_missing_service(request: pytest.FixtureRequest) -> None:
    for key, message in request.node.user_properties:
        if key == "missing_service":
            pytest.fail(message)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN.replace("postgresql://", "postgres://"), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"inferline_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def tabular_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mixed-type table models, MLflow-saved (churn, scorer, scaled, matrix) and skops (frame)."""
    from tests.tabular_models import write_tabular_models

    root = tmp_path_factory.mktemp("tabular")
    write_tabular_models(root)
    return root
