"""Uploading code or pickles over HTTP; management bodies under the inference size limit."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from inferline.dataplane import DataPlane
from inferline.lifecycle import RegistrySync
from inferline.protocols.rest_app import build_app
from inferline.registry.store import Registry
from inferline.security import Guard
from inferline.security.keys import KeyStore
from inferline.settings import Settings
from tests.lifecycle_models import forest_file

MODEL_PY = """\
class Model:
    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
"""
MODEL_SETTINGS = '{"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}], ' + (
    '"outputs": [{"name": "y", "datatype": "FP64", "shape": [-1, 2]}]}'
)

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serving(tmp_path: Path) -> Client:
    """``async with serving(**settings) as client``: a registry-mode app; with ``keys=True``
    authentication is on and ``client.headers`` carry an admin key."""

    @asynccontextmanager
    async def serve(keys: bool = False, **fields: Any) -> AsyncIterator[httpx.AsyncClient]:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        settings = Settings(
            registry_url=url, artifact_dir=tmp_path / "artifacts", max_body_bytes=4096, **fields
        )
        headers = {}
        if keys:
            store = KeyStore(url)
            _, admin = store.create("ops", ["admin"])
            _, reader = store.create("reader", ["read", "predict"])
            store.close()
            headers["authorization"] = f"Bearer {admin}"
        registry = Registry(url, tmp_path / "artifacts")
        plane = DataPlane(settings)
        await plane.start(scan=False)
        sync = RegistrySync(registry, plane, poll_seconds=0.05)
        await sync.start()
        guard = Guard(settings)
        await guard.start()
        app = build_app(plane, sync=sync, guard=guard)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://inferline", headers=headers, timeout=60
            ) as client:
                if keys:
                    client.headers["x-reader"] = f"Bearer {reader}"
                yield client
        finally:
            await guard.stop()
            await sync.stop()
            await plane.stop()
            registry.close()

    return serve


def _pickle(folder: Path) -> Path:
    rows = np.random.default_rng(0).normal(size=(40, 3))
    estimator = LogisticRegression().fit(rows, rows[:, 0] > 0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pkl"
    path.write_bytes(pickle.dumps(estimator))
    return path


async def _upload(
    client: httpx.AsyncClient, filename: str, body: bytes, **params: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/models/m/versions", params={"filename": filename, **params}, content=body
    )


async def test_python_code_is_refused_without_the_flag(serving: Client) -> None:
    async with serving() as client:
        response = await _upload(client, "model.py", MODEL_PY.encode(), settings=MODEL_SETTINGS)
    assert response.status_code == 403
    assert "--allow-code-upload" in response.json()["error"]


async def test_dotted_runtime_and_mlflow_count_as_code(serving: Client, tmp_path: Path) -> None:
    onnx = forest_file(tmp_path / "f", seed=1)
    async with serving() as client:
        dotted = await _upload(client, onnx.name, onnx.read_bytes(), runtime="evil.Model")
        assert dotted.status_code == 403
        mlflow = await _upload(client, onnx.name, onnx.read_bytes(), runtime="mlflow")
        assert mlflow.status_code == 403
        fine = await _upload(client, onnx.name, onnx.read_bytes())
        assert fine.status_code == 201, fine.text


async def test_python_code_with_the_flag_needs_admin(serving: Client) -> None:
    async with serving(keys=True, allow_code_upload=True) as client:
        reader = {"authorization": client.headers["x-reader"]}
        refused = await client.post(
            "/api/v1/models/m/versions",
            params={"filename": "model.py", "settings": MODEL_SETTINGS},
            content=MODEL_PY.encode(),
            headers=reader,
        )
        assert refused.status_code == 403
        created = await _upload(client, "model.py", MODEL_PY.encode(), settings=MODEL_SETTINGS)
        assert created.status_code == 201, created.text
        audit = (await client.get("/api/v1/audit")).json()
        assert audit[0]["actor"].startswith("key:ops@")


async def test_a_pickle_cannot_pin_itself(serving: Client, tmp_path: Path) -> None:
    path = _pickle(tmp_path / "p")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pin = f'{{"sha256": "{digest}"}}'
    async with serving(allow_code_upload=True) as client:
        self_pinned = await _upload(client, path.name, path.read_bytes(), settings=pin)
        assert self_pinned.status_code == 400
        assert "cannot pin its own" in self_pinned.json()["error"]
        unpinned = await _upload(client, path.name, path.read_bytes())
        assert unpinned.status_code == 403 and digest in unpinned.json()["error"]


async def test_a_pickle_pinned_by_the_server_is_accepted(serving: Client, tmp_path: Path) -> None:
    path = _pickle(tmp_path / "p")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    async with serving(allow_code_upload=False, trusted_pickle_sha256=[digest]) as client:
        assert (await _upload(client, path.name, path.read_bytes())).status_code == 403
    async with serving(allow_code_upload=True, trusted_pickle_sha256=[digest.upper()]) as client:
        created = await _upload(client, path.name, path.read_bytes())
        assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/models/m/aliases/production"),
        ("POST", "/api/v1/models/m/promote"),
        ("POST", "/api/v1/models/m/rollback"),
    ],
)
async def test_management_bodies_have_the_inference_limit(
    serving: Client, method: str, path: str
) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(64):
            read += 1024
            yield b" " * 1024

    async with serving() as client:
        declared = await client.request(
            method, path, content=b"{}", headers={"content-length": str(256 * 1024**2)}
        )
        assert declared.status_code == 413
        streamed = await client.request(method, path, content=body())
    assert streamed.status_code == 413
    assert read <= 8 * 1024  # stopped soon after the 4096-byte limit, not read whole
