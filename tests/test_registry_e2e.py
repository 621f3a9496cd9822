"""Real processes on a shared registry: hot swap under load, CLI both ways, replicas converge."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from inferline.protocols._generated import inference_pb2, inference_pb2_grpc
from tests.conftest import ServerProcess, start_server, stop_server
from tests.lifecycle_models import ROWS, forest_file, infer_body, probabilities

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "models", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def environment(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "INFERLINE_HOME": str(tmp_path / "home"),
        "INFERLINE_REGISTRY_URL": url,
        "INFERLINE_REGISTRY_POLL_SECONDS": "0.2",
    }


@pytest.fixture
def registry_env(registry_url: str, tmp_path: Path) -> dict[str, str]:
    return environment(registry_url, tmp_path)


@pytest.fixture
def two_versions(registry_env: dict[str, str], tmp_path: Path) -> dict[str, np.ndarray]:
    return register_two(registry_env, tmp_path)


def register_two(registry_env: dict[str, str], tmp_path: Path) -> dict[str, np.ndarray]:
    one, two = forest_file(tmp_path / "a", seed=1), forest_file(tmp_path / "b", seed=2)
    assert "version 1 (production)" in cli(
        registry_env, "register", "fraud", str(one), "--alias", "production"
    )
    assert "version 2" in cli(registry_env, "register", "fraud", str(two), "--tag", "seed=2")
    return {"1": probabilities(one), "2": probabilities(two)}


def grpc_request() -> inference_pb2.ModelInferRequest:
    tensor = inference_pb2.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=list(ROWS.shape)
    )
    tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
    request = inference_pb2.ModelInferRequest(model_name="fraud", inputs=[tensor])
    request.outputs.add(name="probabilities")
    return request


async def rest_client(server: ServerProcess, stop: asyncio.Event, log: list) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server.http_url}", timeout=30) as client:
        while not stop.is_set():
            response = await client.post("/v2/models/fraud/infer", json=infer_body())
            data = (
                np.array(response.json()["outputs"][0]["data"]).reshape(-1, 2)
                if response.status_code == 200
                else None
            )
            log.append(
                (response.status_code == 200, response.headers.get("inferline-model-version"), data)
            )
            await asyncio.sleep(0.005)


async def grpc_client(server: ServerProcess, stop: asyncio.Event, log: list) -> None:
    async with grpc.aio.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            try:
                call = stub.ModelInfer(grpc_request(), timeout=30)
                response = await call
                trailers = dict(await call.trailing_metadata())
                data = np.array(response.outputs[0].contents.fp32_contents).reshape(-1, 2)
                assert trailers["inferline-model-version"] == response.model_version
                log.append((True, response.model_version, data))
            except grpc.aio.AioRpcError:
                log.append((False, None, None))
            await asyncio.sleep(0.005)


async def wait_for_version(server: ServerProcess, version: str) -> float:
    """Seconds until the server answers with ``version`` (hang guard: 30 s)."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://{server.http_url}") as client:
        while time.monotonic() - start < 30:
            response = await client.post("/v2/models/fraud/infer", json=infer_body())
            if response.headers.get("inferline-model-version") == version:
                return time.monotonic() - start
            await asyncio.sleep(0.02)
    raise AssertionError(f"server never switched to version {version}")


def switches(versions: list[str]) -> list[str]:
    """The distinct runs of a client's versions, in order: e.g. ['1', '2', '1']."""
    runs: list[str] = []
    for version in versions:
        if not runs or runs[-1] != version:
            runs.append(version)
    return runs


async def test_hot_swap_under_load_rest_and_grpc(
    registry_env: dict[str, str], two_versions: dict[str, np.ndarray], tmp_path: Path
) -> None:
    server = start_server(None, tmp_path / "server.log", env=registry_env)
    try:
        stop = asyncio.Event()
        logs: list[list] = [[] for _ in range(4)]
        clients = [
            asyncio.create_task(rest_client(server, stop, logs[0])),
            asyncio.create_task(rest_client(server, stop, logs[1])),
            asyncio.create_task(grpc_client(server, stop, logs[2])),
            asyncio.create_task(grpc_client(server, stop, logs[3])),
        ]
        await asyncio.sleep(0.5)
        # Promote through the local registry (the server notices by polling) ...
        await asyncio.to_thread(cli, registry_env, "promote", "fraud", "2")
        await wait_for_version(server, "2")
        await asyncio.sleep(0.5)
        # ... and roll back through the server's API.
        await asyncio.to_thread(
            cli, registry_env, "rollback", "fraud", "--server", f"http://{server.http_url}"
        )
        await wait_for_version(server, "1")
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop_server(server)
    for log in logs:
        assert len(log) > 20
        assert all(ok for ok, _, _ in log), "a request failed during the swap"
        assert switches([v for _, v, _ in log]) == ["1", "2", "1"]
        for _, version, data in log:
            np.testing.assert_allclose(data, two_versions[version], rtol=1e-6)


@pytest.mark.postgres
async def test_two_replicas_on_postgres_converge(postgres_url: str, tmp_path: Path) -> None:
    registry_env = environment(postgres_url, tmp_path)
    register_two(registry_env, tmp_path)
    replicas = [
        start_server(None, tmp_path / f"replica{i}.log", env=registry_env) for i in range(2)
    ]
    try:
        await asyncio.to_thread(cli, registry_env, "promote", "fraud", "2")
        waited = await asyncio.gather(*(wait_for_version(r, "2") for r in replicas))
        print(f"replicas converged after {max(waited):.2f} s")  # reported, not asserted
        out = cli(registry_env, "list")
        assert "production→2" in out
    finally:
        for replica in replicas:
            stop_server(replica)
