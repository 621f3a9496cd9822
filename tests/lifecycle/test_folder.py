"""One load path: folder models are checked, loaded and warmed up off the loop, and a
model that fails is reported UNAVAILABLE with its reason, not "not found"."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from inferline.dataplane import DataPlane
from inferline.digests import sha256_of
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings

SETTINGS = (
    "runtime: python\n"
    "executor: thread\n"
    "inputs: [{name: x, datatype: FP64, shape: [-1, 1]}]\n"
    "outputs: [{name: y, datatype: FP64, shape: [-1]}]\n"
)

# Counts its calls; refuses zeros when ZEROS_FAIL (a model that cannot pass its warm-up).
CODE = """\
CALLS = []
ZEROS_FAIL = {zeros_fail}


class Model:
    def predict(self, inputs):
        x = inputs["x"]
        if ZEROS_FAIL and not x.any():
            raise ValueError("zeros are not a valid row")
        CALLS.append(x.shape[0])
        return {{"y": x[:, 0] + 1}}
"""


def write_model(root: Path, name: str, extra: str = "", *, zeros_fail: bool = False) -> Path:
    (root / name / "1").mkdir(parents=True)
    code = root / name / "1" / "model.py"
    code.write_text(CODE.format(zeros_fail=zeros_fail))
    (root / name / "model-settings.yaml").write_text(SETTINGS + extra)
    return code


def calls(plane: DataPlane, name: str) -> list[int]:
    user = plane.resolve(name, None).model._user  # the model.py instance
    return sys.modules[type(user).__module__].CALLS


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_model(tmp_path, "good", "warmup_requests: 2\n")
    write_model(tmp_path, "picky", zeros_fail=True)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "model-settings.yaml").write_text("runtime: no.such.Runtime\n")
    (tmp_path / "badyaml").mkdir()
    (tmp_path / "badyaml" / "model-settings.yaml").write_text("runtime: [unclosed\n")
    return tmp_path


@pytest.fixture
async def served(folder: Path) -> AsyncIterator[tuple[DataPlane, httpx.AsyncClient]]:
    plane = DataPlane(Settings(model_dir=folder))
    await plane.start()
    transport = httpx.ASGITransport(app=build_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as client:
        yield plane, client
    await plane.stop()


async def test_folder_models_warm_up_before_traffic(served) -> None:
    plane, client = served
    assert calls(plane, "good") == [1, 1]  # warmup_requests: 2, before any request
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [41.0]}]}
    answer = await client.post("/v2/models/good/infer", json=body)
    assert answer.json()["outputs"][0]["data"] == [42.0]


async def test_a_model_that_failed_to_load_is_unavailable_with_its_reason(served) -> None:
    plane, client = served
    index = (await client.post("/v2/repository/index")).json()
    states = {e["name"]: (e["version"], e["state"], e["reason"]) for e in index}
    assert states["good"] == ("1", "READY", "")
    version, state, reason = states["picky"]
    assert (version, state) == ("1", "UNAVAILABLE")
    assert "failed its warm-up" in reason and "zeros are not a valid row" in reason
    assert states["broken"][1] == "UNAVAILABLE" and "no.such" in states["broken"][2]
    assert states["badyaml"][:2] == ("", "UNAVAILABLE")
    for path in ("/v2/models/picky", "/v2/models/picky/versions/1", "/v2/models/picky/ready"):
        response = await client.get(path)
        assert response.status_code == 503, path
        assert "failed its warm-up" in response.json()["error"]
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [1.0]}]}
    refused = await client.post("/v2/models/picky/infer", json=body)
    assert refused.status_code == 503 and "zeros are not a valid row" in refused.json()["error"]
    assert (await client.get("/v2/models/nothing")).status_code == 404
    ready = await client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert set(ready.json()["models_not_ready"]) == {"picky", "broken", "badyaml"}
    assert "zeros are not a valid row" in ready.json()["models_not_ready"]["picky"]
    assert not plane.ready()


async def test_repository_load_goes_through_the_same_path(served, folder: Path) -> None:
    plane, client = served
    refused = await client.post("/v2/repository/models/picky/load")
    assert refused.status_code == 500 and "failed its warm-up" in refused.json()["error"]
    # Fixed on disk, then loaded again: warmed up, served, no longer reported.
    code = folder / "picky" / "1" / "model.py"
    code.write_text(CODE.format(zeros_fail=False))
    loaded = await client.post("/v2/repository/models/picky/load")
    assert loaded.status_code == 200, loaded.text
    assert calls(plane, "picky") == [1, 1, 1]  # the default three warm-up calls
    index = (await client.post("/v2/repository/index")).json()
    assert [e["state"] for e in index if e["name"] == "picky"] == ["READY"]
    assert "picky" not in plane.not_ready()


async def test_unloading_a_failed_model_clears_its_report(served) -> None:
    plane, client = served
    assert not plane.ready()
    for name in ("picky", "broken", "badyaml"):
        response = await client.post(f"/v2/repository/models/{name}/unload")
        assert response.status_code == 200, response.text
    index = (await client.post("/v2/repository/index")).json()
    assert [(e["name"], e["state"]) for e in index] == [("good", "READY")]
    assert (await client.get("/v2/health/ready")).status_code == 200 and plane.ready()
    assert (await client.get("/v2/models/picky")).status_code == 404
    assert (await client.post("/v2/repository/models/nothing/unload")).status_code == 404


async def test_artifact_hashing_never_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = write_model(tmp_path, "pinned")
    settings = tmp_path / "pinned" / "model-settings.yaml"
    settings.write_text(settings.read_text() + f"sha256: {sha256_of(code)}\n")
    threads: list[int] = []

    def recording(path: Path) -> str:
        threads.append(threading.get_ident())
        return sha256_of(path)

    monkeypatch.setattr("inferline.runtimes.base.sha256_of", recording)
    plane = DataPlane(Settings(model_dir=tmp_path))
    await plane.start()
    try:
        assert plane.model_names() == ["pinned"]
    finally:
        await plane.stop()
    assert threads and threading.get_ident() not in threads  # hashed, and only off the loop
