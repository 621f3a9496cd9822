"""Registry-driven serving in process: swaps, refused versions, the API, traversal, memory."""

from __future__ import annotations

import asyncio
import io
import tarfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferline import lifecycle
from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, Conflict, ModelLoadError
from inferline.lifecycle import RegistrySync
from inferline.protocols.rest_app import build_app
from inferline.registry.store import Registry
from inferline.settings import Settings
from tests.lifecycle_models import big_matmul_file, forest_file, infer_body, probabilities


class Stack:
    def __init__(
        self, registry: Registry, plane: DataPlane, sync: RegistrySync, client: httpx.AsyncClient
    ):
        self.registry, self.plane, self.sync, self.client = registry, plane, sync, client

    @property
    def executor(self):
        return self.plane.executor


@pytest.fixture
async def stack(registry_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    registry = Registry(registry_url, tmp_path / "artifacts")
    plane = DataPlane(Settings(registry_url=registry_url, artifact_dir=tmp_path / "artifacts"))
    await plane.start(scan=False)
    sync = RegistrySync(registry, plane, poll_seconds=0.05)
    await sync.start()
    transport = httpx.ASGITransport(app=build_app(plane, sync=sync))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inferline", timeout=60
    ) as client:
        yield Stack(registry, plane, sync, client)
    await sync.stop()
    await plane.stop()
    registry.close()


async def traffic(
    client: httpx.AsyncClient, stop: asyncio.Event, log: list[tuple[int, str, np.ndarray]]
) -> None:
    """Steady requests until ``stop``: (status, version, probabilities) for each."""
    while not stop.is_set():
        response = await client.post("/v2/models/fraud/infer", json=infer_body())
        version = response.headers.get("inferline-model-version", "")
        data = (
            np.array(response.json()["outputs"][0]["data"]).reshape(-1, 2)
            if response.status_code == 200
            else None
        )
        log.append((response.status_code, version, data))
        await asyncio.sleep(0.002)


async def test_promote_and_rollback_switch_versions_with_no_failure(
    stack: Stack, tmp_path: Path
) -> None:
    one, two = forest_file(tmp_path / "a", seed=1), forest_file(tmp_path / "b", seed=2)
    expected = {"1": probabilities(one), "2": probabilities(two)}
    assert not np.allclose(expected["1"], expected["2"])
    await lifecycle.register(stack.registry, "fraud", one, stack.executor, alias="production")
    await lifecycle.register(stack.registry, "fraud", two, stack.executor)
    await stack.sync.sync()
    stop, log = asyncio.Event(), []
    clients = [asyncio.create_task(traffic(stack.client, stop, log)) for _ in range(4)]
    await asyncio.sleep(0.2)
    marks = [len(log)]
    await lifecycle.promote(stack.registry, "fraud", 2, stack.executor)
    await stack.sync.sync()
    marks.append(len(log))
    await asyncio.sleep(0.2)
    marks.append(len(log))
    assert await lifecycle.rollback(stack.registry, "fraud", stack.executor) == 1
    await stack.sync.sync()
    marks.append(len(log))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*clients)
    assert all(status == 200 for status, _, _ in log), {s for s, _, _ in log}
    for _, version, data in log:
        np.testing.assert_allclose(
            data, expected[version], rtol=1e-6
        )  # the answer matches its version
    assert {v for _, v, _ in log[: marks[0]]} == {"1"}
    assert {v for _, v, _ in log[marks[1] + 4 : marks[2]]} == {
        "2"
    }  # +4: requests already in flight
    assert {v for _, v, _ in log[marks[3] + 4 :]} == {"1"}
    # Version 2 is the latest, so it stays loaded; nothing else lingers.
    assert stack.plane.versions("fraud") == ["1", "2"]


async def test_refused_versions_leave_everything_serving(stack: Stack, tmp_path: Path) -> None:
    good = forest_file(tmp_path / "good", seed=3)
    await lifecycle.register(stack.registry, "fraud", good, stack.executor, alias="production")
    await stack.sync.sync()
    aliases_before = stack.registry.aliases("fraud")
    versions_before = [v.version for v in stack.registry.versions("fraud")]
    stop, log = asyncio.Event(), []
    clients = [asyncio.create_task(traffic(stack.client, stop, log)) for _ in range(3)]

    truncated = tmp_path / "bad" / "truncated.onnx"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="failed to load"):
        await lifecycle.register(
            stack.registry, "fraud", truncated, stack.executor, alias="production"
        )

    raising = tmp_path / "raising" / "model.py"
    raising.parent.mkdir()
    raising.write_text(
        "class Model:\n    def load(self, path):\n        raise RuntimeError('no GPU here')\n    def predict(self, inputs):\n        return inputs\n"
    )
    with pytest.raises(ModelLoadError, match="no GPU here"):
        await lifecycle.register(
            stack.registry,
            "fraud",
            raising,
            stack.executor,
            settings={"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 20]}]},
        )
    assert [v.version for v in stack.registry.versions("fraud")] == versions_before

    narrow = tmp_path / "narrow" / "model.py"  # answers fine, but takes 19 features
    narrow.parent.mkdir()
    narrow.write_text(
        "class Model:\n    def predict(self, inputs):\n        return {'probabilities': inputs['input'][:, :2]}\n"
    )
    record = await lifecycle.register(
        stack.registry,
        "fraud",
        narrow,
        stack.executor,
        settings={"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 19]}]},
    )
    with pytest.raises(Conflict, match="takes different inputs than version 1"):
        await lifecycle.promote(stack.registry, "fraud", record.version, stack.executor)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*clients)

    assert log and all(status == 200 and version == "1" for status, version, _ in log)
    assert stack.registry.aliases("fraud") == aliases_before
    assert stack.plane.model_ready("fraud")
    refused = [e for e in stack.registry.audit("fraud") if not e.ok]
    assert [e.action for e in refused] == ["promote", "register", "register"]
    assert "takes different inputs" in refused[0].detail


async def test_tampered_artifact_is_refused_at_load(stack: Stack, tmp_path: Path) -> None:
    await lifecycle.register(
        stack.registry,
        "fraud",
        forest_file(tmp_path / "a", seed=1),
        stack.executor,
        alias="production",
    )
    record = await lifecycle.register(
        stack.registry, "fraud", forest_file(tmp_path / "b", seed=2), stack.executor
    )
    stored = stack.registry.artifacts.path(record.sha256, record.artifact)
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        await lifecycle.promote(stack.registry, "fraud", 2, stack.executor)
    assert stack.registry.aliases("fraud") == {"production": 1}


async def test_management_api_covers_the_cli(stack: Stack, tmp_path: Path) -> None:
    c = stack.client
    path = forest_file(tmp_path / "a", seed=1)
    created = await c.post(
        "/api/v1/models/fraud/versions",
        params=[
            ("filename", path.name),
            ("alias", "staging"),
            ("tag", "team=risk"),
            ("description", "first"),
        ],
        content=path.read_bytes(),
    )
    assert created.status_code == 201, created.text
    assert created.json()["aliases"] == ["staging"] and created.json()["tags"] == {"team": "risk"}
    second = forest_file(tmp_path / "b", seed=2)
    await c.post(
        "/api/v1/models/fraud/versions",
        params={"filename": second.name},
        content=second.read_bytes(),
    )
    assert (
        await c.put("/api/v1/models/fraud/aliases/production", json={"version": 1})
    ).status_code == 200
    promoted = await c.post("/api/v1/models/fraud/promote", json={"version": 2})
    assert promoted.json() == {"name": "fraud", "alias": "production", "version": 2, "previous": 1}
    answer = await c.post("/v2/models/fraud/infer", json=infer_body())
    assert answer.headers["inferline-model-version"] == "2"
    staged = await c.post("/v2/models/fraud/versions/staging/infer", json=infer_body())
    assert staged.headers["inferline-model-version"] == "1"
    np.testing.assert_allclose(
        np.array(staged.json()["outputs"][0]["data"]).reshape(-1, 2), probabilities(path), rtol=1e-6
    )
    assert (await c.post("/api/v1/models/fraud/rollback", json={})).json()["version"] == 1
    listing = (await c.get("/api/v1/models")).json()
    assert listing == [
        {
            "name": "fraud",
            "latest": 2,
            "versions_count": 2,
            "aliases": {"production": 1, "staging": 1},
        }
    ]
    shown = (await c.get("/api/v1/models/fraud/versions/production")).json()
    assert shown["version"] == 1 and shown["signature"]["inputs"][0]["shape"] == [-1, 20]
    refused = await c.delete("/api/v1/models/fraud/versions/1")
    assert refused.status_code == 409 and "pointed at by alias" in refused.json()["error"]
    assert (await c.delete("/api/v1/models/fraud/versions/2")).status_code == 200
    audit = (await c.get("/api/v1/models/fraud/audit")).json()
    assert audit[0]["action"] == "delete" and audit[-1]["action"] == "register"
    index = (await c.post("/v2/repository/index")).json()
    assert {(e["name"], e["state"]) for e in index} == {("fraud", "READY")}
    assert (await c.post("/v2/repository/models/fraud/unload")).status_code == 200
    assert (await c.post("/v2/models/fraud/infer", json=infer_body())).status_code == 404
    assert (await c.post("/v2/repository/models/fraud/load")).status_code == 200
    assert (await c.post("/v2/models/fraud/infer", json=infer_body())).status_code == 200


@pytest.mark.parametrize("name", ["..", "a..b", ".hidden", "-x", "x" * 129])
async def test_hostile_model_names_get_400(stack: Stack, name: str) -> None:
    for response in (
        await stack.client.post(
            f"/api/v1/models/{name}/versions", params={"filename": "m.onnx"}, content=b"x"
        ),
        await stack.client.get(f"/api/v1/models/{name}"),
        await stack.client.post(f"/v2/repository/models/{name}/load"),
    ):
        assert response.status_code in (400, 404), response.text
        assert "error" in response.json()


async def test_uploads_cannot_write_outside(stack: Stack, tmp_path: Path) -> None:
    outside = tmp_path / "escaped"
    for filename in ("../../escaped", "..", "a/b"):
        response = await stack.client.post(
            "/api/v1/models/fraud/versions", params={"filename": filename}, content=b"x"
        )
        assert response.status_code == 400, filename
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(f"../../../../{outside}")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    response = await stack.client.post(
        "/api/v1/models/fraud/versions",
        params={"filename": "model", "runtime": "mlflow"},
        content=buffer.getvalue(),
        headers={"content-type": "application/x-tar"},
    )
    assert response.status_code == 400 and "cannot be unpacked" in response.json()["error"]
    assert not outside.exists()
    assert stack.registry.model_names() == []


def _rss_bytes() -> int:
    """Resident memory, after glibc hands back what it holds free (when it can).

    Without the trim, free memory cached in the executor threads' malloc arenas
    (other tests' work included, in a full run) counted as growth.
    """
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if libc_name:
        trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None)
        if trim is not None:
            trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_memory_returns_after_unload(tmp_path: Path) -> None:
    """A 32 MB model loaded and unloaded 15 times: RSS must not grow by the sum of them."""
    from inferline.runtimes.loader import load_model
    from inferline.settings import ModelSettings

    big = big_matmul_file(tmp_path / "big")
    size = big.stat().st_size
    assert size > 30_000_000
    plane = DataPlane(Settings())
    await plane.start(scan=False)
    settings = ModelSettings(name="big", runtime="onnx")
    samples = []
    for cycle in range(15):
        model = await load_model(settings, str(cycle), big.parent, plane.executor)
        await plane.add(model)
        await plane.remove("big", str(cycle))
        del model
        samples.append(_rss_bytes())
    await plane.stop()
    growth = samples[-1] - samples[2]  # after the allocator has warmed up
    # Leaking every copy would add 12 x (model size x ~2 for onnxruntime's copies).
    assert growth < 3 * size, (
        f"RSS grew {growth / 1e6:.1f} MB over 12 cycles of a {size / 1e6:.1f} MB model"
    )


def test_guess_runtime(tmp_path: Path) -> None:
    assert lifecycle.guess_runtime(Path("m.onnx")) == "onnx"
    assert lifecycle.guess_runtime(Path("m.skops")) == "sklearn"
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert lifecycle.guess_runtime(tmp_path) == "mlflow"
    with pytest.raises(BadRequest, match="pass --runtime"):
        lifecycle.guess_runtime(Path("model.bin"))


async def test_an_mlflow_folder_registers_and_serves(stack: Stack, tabular_dir: Path) -> None:
    """A folder artifact is copied in whole, hashed by manifest and served by the mlflow runtime."""
    record = await lifecycle.register(
        stack.registry, "churn", tabular_dir / "churn" / "1", stack.executor, alias="production"
    )
    assert record.runtime == "mlflow" and record.artifact == "1"
    await stack.sync.sync()
    meta = (await stack.client.get("/v2/models/churn")).json()
    assert meta["platform"] == "mlflow" and len(meta["inputs"]) > 1  # one input per column


@pytest.mark.parametrize(
    ("params", "body", "why"),
    [
        ({"filename": "model.onnx"}, b"not an onnx graph", "failed to load"),
        ({"filename": "model.bin", "runtime": "no-such-runtime"}, b"x", "unknown runtime"),
    ],
)
async def test_an_upload_that_does_not_load_is_422_not_500(
    stack: Stack, params: dict[str, str], body: bytes, why: str
) -> None:
    """The artifact is the client's: one that does not load is refused, not a server fault."""
    answer = await stack.client.post("/api/v1/models/fraud/versions", params=params, content=body)
    assert answer.status_code == 422, answer.text
    assert why in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "why"),
    [
        ("PUT", "aliases/staging", {"version": 1, "allow_signature_change": "no"}, "true or false"),
        ("POST", "promote", {"version": 1, "alias": True}, "'alias' must be a string"),
        ("POST", "rollback", {"alias": ["production"]}, "'alias' must be a string"),
    ],
)
async def test_alias_bodies_are_checked_as_documented(
    stack: Stack, method: str, path: str, body: dict, why: str
) -> None:
    """What the OpenAPI document forbids is refused, not read loosely ("no" is not true)."""
    answer = await stack.client.request(method, f"/api/v1/models/fraud/{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert why in answer.json()["error"]


async def test_versions_that_fail_on_the_server_are_reported_with_their_reason(
    stack: Stack, tmp_path: Path
) -> None:
    good = forest_file(tmp_path / "good", seed=1)
    await lifecycle.register(stack.registry, "fraud", good, stack.executor, alias="production")
    # Stored without the load check (as a replica lacking a runtime would meet them).
    truncated = tmp_path / "bad" / "truncated.onnx"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:500])
    signature = stack.registry.versions("fraud")[0].signature
    stack.registry.register("fraud", truncated, runtime="onnx", signature=signature)
    stack.registry.register("risk", truncated, runtime="onnx", signature=signature)
    await stack.sync.sync(force=True)
    c = stack.client
    index = {(e["name"], e["version"]): e for e in (await c.post("/v2/repository/index")).json()}
    assert index["fraud", "1"]["state"] == "READY"
    for key in (("fraud", "2"), ("risk", "1")):
        assert index[key]["state"] == "UNAVAILABLE", key
        assert "failed to load" in index[key]["reason"], key
    for path in ("/v2/models/risk", "/v2/models/fraud/versions/2"):
        response = await c.get(path)
        assert response.status_code == 503 and "failed to load" in response.json()["error"]
    assert (await c.post("/v2/models/fraud/infer", json=infer_body())).status_code == 200
    ready = await c.get("/v2/health/ready")
    assert ready.status_code == 503 and list(ready.json()["models_not_ready"]) == ["risk"]
    # Once the registry no longer wants them, they are no longer reported.
    stack.registry.delete_version("fraud", 2)
    stack.registry.delete_version("risk", 1)
    await stack.sync.sync(force=True)
    index = (await c.post("/v2/repository/index")).json()
    assert [(e["name"], e["version"], e["state"]) for e in index if e["version"]] == [
        ("fraud", "1", "READY")
    ]
    assert (await c.get("/v2/health/ready")).status_code == 200


async def test_a_version_neither_aliased_nor_latest_says_how_to_serve_it(
    stack: Stack, tmp_path: Path
) -> None:
    paths = [forest_file(tmp_path / str(seed), seed=seed) for seed in (1, 2, 3)]
    for path in paths:
        await lifecycle.register(stack.registry, "fraud", path, stack.executor)
    await lifecycle.promote(stack.registry, "fraud", 1, stack.executor)
    await stack.sync.sync()
    c = stack.client
    refused = await c.post("/v2/models/fraud/versions/2/infer", json=infer_body())
    assert refused.status_code == 404
    message = refused.json()["error"]
    assert "version 2 is registered but not loaded" in message
    assert "inferline models alias fraud <alias> 2" in message
    assert (await c.get("/v2/models/fraud/versions/2")).json()["error"] == message
    index = (await c.post("/v2/repository/index")).json()
    assert [(e["version"], e["state"]) for e in index] == [
        ("1", "READY"),
        ("2", "UNAVAILABLE"),
        ("3", "READY"),
    ]
    # Doing what the message says serves it, by number and by alias.
    assert (
        await c.put("/api/v1/models/fraud/aliases/review", json={"version": 2})
    ).status_code == 200
    for path in ("/v2/models/fraud/versions/2/infer", "/v2/models/fraud/versions/review/infer"):
        answer = await c.post(path, json=infer_body())
        assert answer.status_code == 200 and answer.headers["inferline-model-version"] == "2"
        np.testing.assert_allclose(
            np.array(answer.json()["outputs"][0]["data"]).reshape(-1, 2),
            probabilities(paths[1]),
            rtol=1e-6,
        )
    # A version that was never registered is plainly unknown.
    unknown = await c.post("/v2/models/fraud/versions/9/infer", json=infer_body())
    assert unknown.status_code == 404 and "has no version '9'" in unknown.json()["error"]


async def test_the_same_bytes_uploaded_under_another_name_register(
    stack: Stack, tmp_path: Path
) -> None:
    path = forest_file(tmp_path / "a", seed=1)
    versions = []
    for filename in (path.name, "renamed.onnx"):
        created = await stack.client.post(
            "/api/v1/models/fraud/versions",
            params={"filename": filename},
            content=path.read_bytes(),
        )
        assert created.status_code == 201, created.text
        versions.append(created.json())
    assert versions[0]["sha256"] == versions[1]["sha256"]
    assert [v["artifact"] for v in versions] == [path.name, "renamed.onnx"]
    answer = await stack.client.post("/v2/models/fraud/versions/2/infer", json=infer_body())
    np.testing.assert_allclose(
        np.array(answer.json()["outputs"][0]["data"]).reshape(-1, 2),
        probabilities(path),
        rtol=1e-6,
    )


async def test_registry_versions_are_hashed_off_the_event_loop(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await lifecycle.register(
        stack.registry, "fraud", forest_file(tmp_path / "a", seed=1), stack.executor
    )
    await stack.sync.sync()
    threads: list[int] = []

    def recording(real):
        def hash_in(path: Path) -> str:
            threads.append(threading.get_ident())
            return real(path)

        return hash_in

    import inferline.registry.artifacts as artifacts
    import inferline.runtimes.base as base

    monkeypatch.setattr(base, "sha256_of", recording(base.sha256_of))
    monkeypatch.setattr(artifacts, "tree_sha256", recording(artifacts.tree_sha256))
    for version in stack.plane.versions("fraud"):
        await stack.plane.remove("fraud", version)
    await stack.sync.sync(force=True)
    assert stack.plane.versions("fraud") == ["1"]
    assert threads and threading.get_ident() not in threads
