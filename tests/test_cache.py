"""Prediction cache: identical answers on hits, no stale answers, Redis shared or down."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferline.cache import LocalCache, RedisCache, cache_key
from inferline.dataplane import DataPlane
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings

# Each version answers differently and counts its calls, so a stale or skipped call shows.
CODE = """\
CALLS = []


class Model:
    def predict(self, inputs):
        CALLS.append(inputs["x"].copy())
        if inputs["x"][0, 0] < 0:
            raise ValueError("negative")
        return {"y": inputs["x"].sum(axis=1) * VERSION}
"""


def write_models(root: Path) -> Path:
    for version in (1, 2):
        folder = root / "cached" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(CODE.replace("VERSION", str(version)))
    (root / "cached" / "model-settings.yaml").write_text(
        "runtime: python\nexecutor: thread\nwarmup_requests: 0\n"  # tests count calls
        "inputs: [{name: x, datatype: FP64, shape: [-1, 2]}]\n"
        "outputs: [{name: y, datatype: FP64, shape: [-1]}]\n"
        "cache: {enabled: true, ttl_seconds: 60}\n"
    )
    return root


def calls(plane: DataPlane, version: str) -> list:
    user = plane.resolve("cached", version).model._user
    return sys.modules[type(user).__module__].CALLS


async def client_for(plane: DataPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(plane)), base_url="http://x"
    )


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[DataPlane]:
    plane = DataPlane(Settings(model_dir=write_models(tmp_path)))
    await plane.start()
    yield plane
    await plane.stop()


def body(x: list[list[float]], **parameters: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [len(x), 2], "data": x}]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


async def test_hits_are_identical_and_skip_the_model(plane: DataPlane) -> None:
    async with await client_for(plane) as c:
        first = (
            await c.post("/v2/models/cached/versions/1/infer", json=body([[1, 2], [3, 4]]))
        ).json()
        second = (
            await c.post("/v2/models/cached/versions/1/infer", json=body([[1, 2], [3, 4]]))
        ).json()
        assert first == second and first["outputs"][0]["data"] == [3.0, 7.0]
        assert len(calls(plane, "1")) == 1
        await c.post(
            "/v2/models/cached/versions/1/infer", json=body([[1, 2], [3, 5]])
        )  # other input
        await c.post("/v2/models/cached/versions/1/infer", json=body([[1, 2], [3, 4]], cache=False))
        await c.post(
            "/v2/models/cached/versions/1/infer",
            json=body([[1, 2], [3, 4]]),
            headers={"cache-control": "no-cache"},
        )
        assert len(calls(plane, "1")) == 4


async def test_no_answer_crosses_versions(plane: DataPlane) -> None:
    async with await client_for(plane) as c:
        one = (await c.post("/v2/models/cached/versions/1/infer", json=body([[1, 1]]))).json()
        two = (await c.post("/v2/models/cached/versions/2/infer", json=body([[1, 1]]))).json()
    assert one["outputs"][0]["data"] == [2.0] and two["outputs"][0]["data"] == [4.0]
    assert two["model_version"] == "2" and len(calls(plane, "2")) == 1


async def test_failures_are_not_cached(plane: DataPlane) -> None:
    async with await client_for(plane) as c:
        for _ in range(2):
            assert (
                await c.post("/v2/models/cached/versions/1/infer", json=body([[-1, 0]]))
            ).status_code == 500
    assert len(calls(plane, "1")) == 2


async def test_local_cache_evicts_least_recent_by_bytes_and_expires() -> None:
    evicted = []
    cache = LocalCache(max_bytes=3 * 8 * 10, ttl=60, on_evict=lambda: evicted.append(1))
    arrays = {i: {"y": np.full(10, i, dtype=np.float64)} for i in range(4)}  # 80 bytes each
    for i in range(3):
        await cache.put(bytes([i]), arrays[i])
    assert await cache.get(bytes([0])) is not None  # 0 becomes most recent
    await cache.put(bytes([3]), arrays[3])
    assert await cache.get(bytes([1])) is None and len(evicted) == 1
    hit = await cache.get(bytes([3]))
    assert hit is not None and np.array_equal(hit["y"], arrays[3]["y"])
    assert not hit["y"].flags.writeable  # callers cannot change what others will be served
    short = LocalCache(max_bytes=1000, ttl=0.01)
    await short.put(b"k", arrays[0])
    await asyncio.sleep(0.05)
    assert await short.get(b"k") is None


def test_keys_separate_models_versions_dtypes_and_shapes() -> None:
    x = {"x": np.arange(4, dtype=np.float64).reshape(2, 2)}
    keys = {
        cache_key("m", "1", b"s", x),
        cache_key("m", "2", b"s", x),
        cache_key("n", "1", b"s", x),
        cache_key("m", "1", b"t", x),
        cache_key("m", "1", b"s", {"x": x["x"].astype(np.float32)}),
        cache_key("m", "1", b"s", {"x": x["x"].reshape(1, 4)}),
    }
    assert len(keys) == 6
    assert cache_key("m", "1", b"s", x) == cache_key("m", "1", b"s", {"x": x["x"].copy()})


@pytest.mark.redis
async def test_redis_cache_is_shared_between_servers(tmp_path: Path) -> None:
    import redis

    root = write_models(tmp_path)
    planes = [
        DataPlane(Settings(model_dir=root, cache_url="redis://127.0.0.1:6379/0")) for _ in range(2)
    ]
    for plane in planes:
        await plane.start()
    x = (
        np.abs(np.random.default_rng().normal(size=(1, 2))).round(6).tolist()
    )  # fresh key each run; negative fails on purpose
    try:
        answers = []
        for plane in planes:
            async with await client_for(plane) as c:
                answers.append(
                    (await c.post("/v2/models/cached/versions/1/infer", json=body(x))).json()
                )
        assert answers[0] == answers[1]
        assert len(calls(planes[0], "1")) == 1 and len(calls(planes[1], "1")) == 0
    finally:
        served = planes[0].resolve("cached", "1")
        key = cache_key("cached", "1", served.signature, {"x": np.array(x, dtype=np.float64)})
        for plane in planes:
            await plane.stop()
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        # Only this test's entry: other runs may share the Redis server.
        assert client.delete(b"inferline:cache:" + key) == 1
        client.close()


async def test_redis_down_serves_uncached(tmp_path: Path) -> None:
    plane = DataPlane(Settings(model_dir=write_models(tmp_path), cache_url="redis://127.0.0.1:9/0"))
    await plane.start()
    try:
        async with await client_for(plane) as c:
            for _ in range(3):
                response = await c.post("/v2/models/cached/versions/1/infer", json=body([[1, 2]]))
                assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [
                    3.0
                ]
        assert len(calls(plane, "1")) == 3
        cache = plane.resolve("cached", "1").cache
        assert isinstance(cache, RedisCache) and cache.errors == 6  # a get and a put each time
    finally:
        await plane.stop()


CACHE_HEADER = "x-inferline-cache"


async def test_rest_answers_say_hit_or_miss_on_every_route_family(plane: DataPlane) -> None:
    async with await client_for(plane) as c:
        for post in (
            lambda: c.post("/v2/models/cached/versions/1/infer", json=body([[7, 8]])),
            lambda: c.post("/v1/models/cached/versions/1:predict", json={"instances": [[9, 1]]}),
            lambda: c.post("/models/cached/versions/1/invocations", json={"inputs": [[2, 9]]}),
        ):
            first, second = await post(), await post()
            assert first.status_code == second.status_code == 200, first.text
            assert first.headers[CACHE_HEADER] == "miss"
            assert second.headers[CACHE_HEADER] == "hit"
            assert first.json() == second.json()
        skipped = await c.post(
            "/v2/models/cached/versions/1/infer", json=body([[7, 8]], cache=False)
        )
        assert CACHE_HEADER not in skipped.headers
        # A model without a cache says nothing.
        plane.resolve("cached", "1").cache = None
        uncached = await c.post("/v2/models/cached/versions/1/infer", json=body([[7, 8]]))
        assert uncached.status_code == 200 and CACHE_HEADER not in uncached.headers


@pytest.mark.parametrize("engine", ["grpcio", "native"])
async def test_grpc_trailers_say_hit_or_miss(plane: DataPlane, engine: str) -> None:
    import grpc

    from inferline.protocols._generated import inference_pb2 as pb
    from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
    from tests.protocols.grpc_servers import start_server

    server, address = await start_server(plane, plane.settings, engine)
    try:
        request = pb.ModelInferRequest(model_name="cached", model_version="1")
        tensor = request.inputs.add(name="x", datatype="FP64", shape=[1, 2])
        tensor.contents.fp64_contents.extend([3.0, 4.0])
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            states = []
            for _ in range(2):
                call = stub.ModelInfer(request)
                await call
                states.append(dict(await call.trailing_metadata()).get(CACHE_HEADER))
    finally:
        await server.stop(None)
    assert states == ["miss", "hit"]
