"""The data plane through the REST app: batching, timeouts, queue limits, model failures."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferline.dataplane import DataPlane
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings

# Records every batch it sees, so tests can tell batching really happened.
BATCHED_CODE = """\
import asyncio
import numpy as np

BATCHES = []


class Model:
    async def predict(self, inputs):
        x = inputs["x"]
        BATCHES.append(x.shape[0])
        await asyncio.sleep(0.005)
        return {"y": x.sum(axis=tuple(range(1, x.ndim))) * 2 + 1}
"""

SLOW_CODE = """\
import asyncio


class Model:
    async def predict(self, inputs):
        await asyncio.sleep(float(inputs["x"][0, 0]))
        return {"y": inputs["x"][:, 0]}
"""

BROKEN_CODE = """\
class Model:
    def predict(self, inputs):
        if inputs["x"][0, 0] < 0:
            raise RuntimeError("secret internal detail")
        if inputs["x"][0, 0] > 100:
            return {"y": inputs["x"][:1, 0].repeat(0)}
        return {"y": inputs["x"][:, 0]}
"""


def write_model(root: Path, name: str, code: str, extra: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(code)
    (root / name / "model-settings.yaml").write_text(
        "runtime: python\n"
        "inputs: [{name: x, datatype: FP64, shape: [-1, -1]}]\n"
        "outputs: [{name: y, datatype: FP64, shape: [-1]}]\n" + extra
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, DataPlane]]:
    write_model(
        tmp_path,
        "batched",
        BATCHED_CODE,
        # No warm-up: the test counts every row the model sees.
        "warmup_requests: 0\nbatching: {max_batch_size: 16, max_queue_delay_ms: 5}\n",
    )
    write_model(
        tmp_path,
        "slow",
        SLOW_CODE,
        "timeout_ms: 100\nbatching: {max_batch_size: 1, max_queue_size: 2, max_concurrent_batches: 1, max_queue_delay_ms: 0}\n",
    )
    write_model(tmp_path, "broken", BROKEN_CODE, "")
    plane = DataPlane(Settings(model_dir=tmp_path))
    await plane.start()
    transport = httpx.ASGITransport(app=build_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline", timeout=30) as c:
        yield c, plane
    await plane.stop()


def request(x: np.ndarray, request_id: str = "") -> dict[str, object]:
    tensor = {"name": "x", "datatype": "FP64", "shape": list(x.shape), "data": x.ravel().tolist()}
    return {"id": request_id, "inputs": [tensor]}


async def test_200_concurrent_clients_each_get_their_own_answer(client) -> None:
    c, plane = client
    rng = np.random.default_rng(42)
    cases = []
    for i in range(200):
        rows = int(rng.integers(1, 40))  # some larger than max_batch_size: split and rejoined
        width = int(rng.choice([2, 3, 5]))  # mixed trailing shapes never share a batch
        cases.append((f"r{i}", rng.normal(size=(rows, width))))

    async def one(request_id: str, x: np.ndarray) -> None:
        response = await c.post("/v2/models/batched/infer", json=request(x, request_id))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == request_id
        np.testing.assert_allclose(body["outputs"][0]["data"], x.sum(axis=1) * 2 + 1, rtol=1e-12)

    await asyncio.wait_for(asyncio.gather(*(one(i, x) for i, x in cases)), timeout=60)
    user = plane.resolve("batched", None).model._user  # the model.py instance
    recorded = sys.modules[type(user).__module__].BATCHES
    assert max(recorded) <= 16
    assert sum(recorded) == sum(x.shape[0] for _, x in cases)
    chunks = sum(-(-x.shape[0] // 16) for _, x in cases)  # oversized requests are split
    assert len(recorded) < chunks, "requests were never merged"


async def test_timeout_answers_504(client) -> None:
    c, _ = client
    response = await c.post("/v2/models/slow/infer", json=request(np.array([[0.5]])))
    assert response.status_code == 504
    assert response.json() == {"error": "model 'slow' did not answer within 100 ms"}
    # The abandoned call still holds the model's only batch slot until it ends; then the
    # model answers again (polled, not timed).
    for _ in range(100):
        ok = await c.post("/v2/models/slow/infer", json=request(np.array([[0.0]])))
        if ok.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert ok.status_code == 200


async def test_full_queue_answers_503_with_retry_after(client) -> None:
    c, _ = client
    responses = await asyncio.gather(
        *(c.post("/v2/models/slow/infer", json=request(np.array([[0.05]]))) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses
    full = [r for r in responses if r.status_code == 503]
    assert full, statuses
    assert all(r.headers["retry-after"] == "1" for r in full)
    assert "max_queue_size" in full[0].json()["error"]


async def test_model_failure_is_a_clean_500(client) -> None:
    c, _ = client
    response = await c.post(
        "/v2/models/broken/infer",
        json=request(np.array([[-1.0]])),
        headers={"x-request-id": "rid-9"},
    )
    assert response.status_code == 500
    error = response.json()["error"]
    assert "secret internal detail" not in error and "Traceback" not in error
    assert "RuntimeError" in error
    assert response.headers["x-request-id"] == "rid-9"
    assert (
        await c.post("/v2/models/broken/infer", json=request(np.array([[1.0]])))
    ).status_code == 200


async def test_not_ready_model_answers_503(client) -> None:
    c, plane = client
    plane.resolve("broken", None).model.ready = False
    response = await c.post("/v2/models/broken/infer", json=request(np.array([[1.0]])))
    assert response.status_code == 503
    assert "is not ready" in response.json()["error"]
    ready = await c.get("/v2/models/broken/ready")
    assert ready.status_code == 503
    assert (await c.get("/v2/health/ready")).status_code == 503
