"""Rate limits: token buckets per principal (or address), 429 / RESOURCE_EXHAUSTED, Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry

from inferline.dataplane import DataPlane
from inferline.errors import RateLimited
from inferline.monitoring.metrics import Metrics
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.protocols.rest_app import build_app
from inferline.security import Guard
from inferline.security.keys import KeyStore
from inferline.security.policy import PREDICT, PUBLIC
from inferline.security.ratelimit import LocalBuckets, RateLimiter
from inferline.settings import RateLimitSettings, Settings
from tests.protocols.grpc_servers import engine, start_server
from tests.security.conftest import AuthWorld

__all__ = ["engine"]

REDIS = "redis://127.0.0.1:6379/0"


def test_bucket_arithmetic() -> None:
    buckets = LocalBuckets(rate=2.0, burst=3, max_clients=2)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)  # one token comes in 1/2 s
    assert buckets.take("a", now=0.5) == 0.0
    assert buckets.take("b", now=0.5) == 0.0  # another principal: its own bucket
    buckets.take("c", now=0.5)  # past max_clients: the least recently used ("a") goes
    assert "a" not in buckets._buckets and len(buckets._buckets) == 2


def _limited(settings: Settings, rate: float = 0.001, burst: int = 3) -> Settings:
    limits = RateLimitSettings(requests_per_second=rate, burst=burst)
    return settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"rate_limit": limits})}
    )


async def test_guard_limits_each_principal(auth: AuthWorld) -> None:
    metrics = Metrics(CollectorRegistry())
    guard = Guard(_limited(auth.settings), metrics)
    await guard.start()
    try:
        for cred in ("key-kitchen", "jwt-hs-kitchen"):  # two principals, a bucket each
            for _ in range(3):
                await guard.check(PREDICT, "kitchen", auth.creds[cred], "h", "rest", "x")
        with pytest.raises(RateLimited) as caught:
            await guard.check(PREDICT, "kitchen", auth.creds["key-kitchen"], "h", "rest", "x")
        assert caught.value.retry_after > 900 and caught.value.http_status == 429
        await guard.check(PUBLIC, None, None, "h", "rest", "health")  # never limited
    finally:
        await guard.stop()
    assert metrics.rate_limits.labels("rest")._value.get() == 1


async def test_without_auth_each_address_has_a_bucket(settings: Settings) -> None:
    guard = Guard(_limited(settings, burst=1))
    await guard.start()
    try:
        assert not guard.enabled and not guard.idle
        await guard.check(PREDICT, "m", None, "10.0.0.1", "rest", "x")
        await guard.check(PREDICT, "m", None, "10.0.0.2", "rest", "x")
        with pytest.raises(RateLimited):
            await guard.check(PREDICT, "m", None, "10.0.0.1", "rest", "x")
    finally:
        await guard.stop()


@pytest.fixture
async def limited_guard(auth: AuthWorld) -> AsyncIterator[Guard]:
    guard = Guard(_limited(auth.settings, burst=2), Metrics(CollectorRegistry()))
    await guard.start()
    yield guard
    await guard.stop()


async def test_rest_answers_429_with_retry_after(
    auth_plane: DataPlane, limited_guard: Guard, auth: AuthWorld
) -> None:
    transport = httpx.ASGITransport(app=build_app(auth_plane, guard=limited_guard))
    headers = {"authorization": auth.creds["key-reader"]}
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        statuses = [(await client.get("/v2/models/kitchen", headers=headers)) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert int(statuses[-1].headers["retry-after"]) >= 1
        assert "rate limit" in statuses[-1].json()["error"]
        assert (await client.get("/v2/health/ready")).status_code == 200


async def test_grpc_answers_resource_exhausted(
    auth_plane: DataPlane, limited_guard: Guard, auth: AuthWorld, engine: str
) -> None:
    server, address = await start_server(auth_plane, auth.settings, engine, guard=limited_guard)
    metadata = [("authorization", auth.creds["key-reader"])]
    codes = []
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(3):
                try:
                    await stub.ModelMetadata(
                        pb.ModelMetadataRequest(name="kitchen"), metadata=metadata
                    )
                    codes.append("OK")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
    finally:
        await server.stop(None)
    assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED"]


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from inferline.security.ratelimit import RateLimiter
    from inferline.settings import RateLimitSettings

    async def main():
        settings = RateLimitSettings(requests_per_second=0.001, burst=50, redis_url=sys.argv[1])
        limiter = RateLimiter(settings)
        sys.stdin.readline()  # start together
        allowed = 0
        for _ in range(40):
            allowed += await limiter.take(sys.argv[2]) == 0.0
        await limiter.close()
        print(allowed, limiter.errors)

    asyncio.run(main())
    """
)


@pytest.mark.redis
def test_redis_counts_are_exact_across_processes() -> None:
    """Two processes take 40 each from one bucket of 50: exactly 50 pass, whatever the mix."""
    import redis

    bucket = f"test-{uuid.uuid4().hex}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, REDIS, bucket],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate("go\n", timeout=120)[0].split() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert [int(errors) for _, errors in results] == [0, 0]  # Redis answered every take
    assert sum(int(allowed) for allowed, _ in results) == 50
    redis.Redis.from_url(REDIS).delete(f"inferline:rl:{bucket}")


@pytest.mark.redis
async def test_redis_limiter_matches_the_local_one() -> None:
    bucket = f"test-{uuid.uuid4().hex}"
    limiter = RateLimiter(RateLimitSettings(requests_per_second=0.5, burst=2, redis_url=REDIS))
    try:
        waits = [await limiter.take(bucket) for _ in range(3)]
    finally:
        await limiter.close()
    assert waits[:2] == [0.0, 0.0]
    assert 0 < waits[2] <= 2.0  # the next token, at 0.5/s, comes within 2 s
    assert limiter.errors == 0


@pytest.mark.redis
def test_a_real_server_with_two_workers_counts_429s_exactly(
    model_dir: Path, tmp_path: Path
) -> None:
    """``inferline serve --workers 2`` with Redis buckets: of N requests from one key,
    exactly the burst succeed whichever worker takes them, every other one is a 429
    with ``Retry-After``, and the merged ``/metrics`` counts exactly those refusals."""
    import redis

    from tests.conftest import start_server, stop_server
    from tests.monitoring.test_metrics import ROW, samples, value

    home = tmp_path / "home"
    name = f"rl-{uuid.uuid4().hex[:12]}"  # a fresh bucket in Redis on every run
    store = KeyStore(Settings(home=home).registry_database)
    try:
        key = store.create(name, ["predict"])[1]
    finally:
        store.close()
    burst, sent = 25, 60
    env = {
        "INFERLINE_HOME": str(home),
        "INFERLINE_AUTH__RATE_LIMIT__REQUESTS_PER_SECOND": "0.001",  # no refill during the test
        "INFERLINE_AUTH__RATE_LIMIT__BURST": str(burst),
        "INFERLINE_AUTH__RATE_LIMIT__REDIS_URL": REDIS,
        "INFERLINE_AUTH__PUBLIC_METRICS": "true",  # scrapes take no token
    }
    server = start_server(model_dir, tmp_path / "workers.log", "--workers", "2", env=env)
    statuses: list[int] = []
    try:
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(sent):  # a new connection each time: the kernel spreads them over workers
            with httpx.Client(base_url=f"http://{server.http_url}", headers=headers) as client:
                response = client.post("/v2/models/demo/infer", json=ROW)
            if response.status_code == 429:
                assert float(response.headers["retry-after"]) > 0
            statuses.append(response.status_code)
        assert statuses.count(200) == burst, statuses
        assert statuses.count(429) == sent - burst, statuses
        counted = -1.0
        for _ in range(200):  # the other worker's counts land within its flush interval
            with httpx.Client(base_url=f"http://{server.http_url}") as client:
                found = samples(client.get("/metrics").text)
            counted = value(found, "inferline_rate_limited_total", protocol="rest")
            if counted == sent - burst:
                break
            time.sleep(0.02)
        assert counted == sent - burst
    finally:
        stop_server(server)
        redis.Redis.from_url(REDIS).delete(f"inferline:rl:key:{name}")
