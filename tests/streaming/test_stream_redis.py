"""Redis Streams end to end: parity with REST, dead letters, retries, result keys, the
atomic settle, SIGKILL of one of two consumers, SIGTERM drains, status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from inferline.dataplane import DataPlane
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings
from inferline.streaming.consumer import Result
from inferline.streaming.redis import RedisBroker
from tests.streaming.conftest import (
    REDIS,
    Streams,
    consuming,
    plane_settings,
    start_consumer,
    wait_for,
    wait_sync,
)

pytestmark = pytest.mark.redis


def _results(redis_client: Any, stream: str) -> dict[str, dict[str, str]]:
    return {fields["id"]: fields for _, fields in redis_client.xrange(stream)}


def _pending(redis_client: Any, streams: Streams) -> int:
    for group in redis_client.xinfo_groups(streams.source):
        if group["name"] == streams.group:
            return int(group["pending"])
    return -1


async def _rest_answers(models: Path, model: str, bodies: list[dict[str, Any]]) -> list[Any]:
    plane = DataPlane(Settings(model_dir=models, http_port=0, grpc_port=None))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=build_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = []
            for body in bodies:
                reply = await client.post(f"/v2/models/{model}/infer", json=body)
                assert reply.status_code == 200, reply.text
                answers.append({o["name"]: o for o in reply.json()["outputs"]})
            return answers
    finally:
        await plane.stop()


async def test_stream_results_equal_rest_answers_bit_for_bit(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(200, 20)).astype(np.float32)
    # Half as entry fields (values per the signature), half as a V2 request in a field.
    for i, row in enumerate(rows):
        if i % 2:
            v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                              "data": row.tolist()}]}  # fmt: skip
            redis_client.xadd(streams.source, {"id": str(i), "data": json.dumps(v2)})
        else:
            redis_client.xadd(streams.source, {"id": str(i), "input": json.dumps(row.tolist())})
    bodies = [
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": r.tolist()}]}
        for r in rows
    ]
    rest = await _rest_answers(stream_models, "demo", bodies)
    # Fields first (payload_field None), then the same entries' V2 ones with --payload-field.
    fields_settings = plane_settings(stream_models, streams.config(batch_size=32))
    async with consuming(fields_settings, "demo"):
        await wait_for(lambda: redis_client.xlen(streams.sink) == 100)
        await wait_for(lambda: redis_client.xlen(streams.dead) == 100)
    # The V2 ones went to the dead letter (no 'input' field); replay them through --payload-field.
    replay = f"{streams.source}-v2"
    for _, fields in redis_client.xrange(streams.dead):
        redis_client.xadd(replay, orjson.loads(fields["payload"]))
    v2_streams = Streams(replay, streams.sink, f"{replay}-dead", streams.group)
    v2_settings = plane_settings(stream_models, v2_streams.config(payload_field="data"))
    try:
        async with consuming(v2_settings, "demo"):
            await wait_for(lambda: redis_client.xlen(streams.sink) == 200)
    finally:
        redis_client.delete(replay, f"{replay}-dead")
    results = _results(redis_client, streams.sink)
    assert len(results) == 200
    for i, answer in enumerate(rest):
        got = results[str(i)]
        assert got["model"] == "demo" and got["version"] == "1"
        probabilities = np.asarray(orjson.loads(got["probabilities"]), np.float32)
        expected = np.asarray(answer["probabilities"]["data"], np.float32)
        assert probabilities.tobytes() == expected.tobytes()
        # A V2 request states the batch dimension, and its result keeps it; one row does not.
        label = answer["label"]["data"] if i % 2 else answer["label"]["data"][0]
        assert orjson.loads(got["label"]) == label


async def test_kitchen_types_match_rest(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    doc = {"fp": [1.5, 2.25, -3.0, 0.1], "i64": [7, -2], "flag": [True], "text": ["héllo"]}
    redis_client.xadd(streams.source, {"id": "k", "data": json.dumps(doc)})
    body = {
        "inputs": [
            {"name": "fp", "datatype": "FP32", "shape": [1, 4], "data": doc["fp"]},
            {"name": "i64", "datatype": "INT64", "shape": [1, 2], "data": doc["i64"]},
            {"name": "flag", "datatype": "BOOL", "shape": [1, 1], "data": doc["flag"]},
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": doc["text"]},
        ]
    }
    (rest,) = await _rest_answers(stream_models, "kitchen", [body])
    async with consuming(
        plane_settings(stream_models, streams.config(payload_field="data")), "kitchen"
    ):
        await wait_for(lambda: redis_client.xlen(streams.sink) == 1)
    got = _results(redis_client, streams.sink)["k"]
    assert np.float32(orjson.loads(got["fp_sum"])) == np.float32(rest["fp_sum"]["data"][0])
    assert orjson.loads(got["i64_double"]) == rest["i64_double"]["data"]
    assert orjson.loads(got["flag_not"]) == rest["flag_not"]["data"]
    assert orjson.loads(got["text_upper"]) == rest["text_upper"]["data"]


async def test_poison_messages_go_to_the_dead_letter_and_the_rest_is_scored(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    rng = np.random.default_rng(1)
    poison: dict[str, str] = {}
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(2000):
            fields = {"id": str(i), "x": json.dumps(rng.uniform(0, 1, 3).round(3).tolist())}
            if i % 100 == 7:  # 1 %: out of range, not JSON, a missing input, a ragged row
                kind = ("range", "json", "missing", "ragged")[(i // 100) % 4]
                poison[str(i)] = kind
                fields = {
                    "range": {"id": str(i), "x": "[5, 0, 0]"},
                    "json": {"id": str(i), "x": "[1, 2,"},
                    "missing": {"id": str(i), "y": "[0, 0, 0]"},
                    "ragged": {"id": str(i), "x": "[[1, 2], [3]]"},
                }[kind]
            pipe.xadd(streams.source, fields)
        pipe.execute()
    async with consuming(plane_settings(stream_models, streams.config()), "ranged"):
        await wait_for(lambda: redis_client.xlen(streams.sink) + redis_client.xlen(streams.dead)
                       == 2000)  # fmt: skip
    assert _pending(redis_client, streams) == 0
    dead = _results(redis_client, streams.dead)
    assert set(dead) == set(poison)
    for message_id, fields in dead.items():
        assert orjson.loads(fields["error"])["error"]
        assert fields["attempts"] == "1"
        assert orjson.loads(fields["payload"])["id"] == message_id
    assert (
        "above the allowed maximum"
        in dead[next(k for k, v in poison.items() if v == "range")]["error"]
    )
    results = _results(redis_client, streams.sink)
    assert len(results) == 2000 - len(poison)
    for _, fields in redis_client.xrange(streams.source):
        if fields["id"] in results:
            expected = np.asarray(json.loads(fields["x"])).sum()
            assert orjson.loads(results[fields["id"]]["y"]) == expected


async def test_a_message_failing_every_delivery_is_dead_lettered_after_max_deliveries(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    redis_client.xadd(streams.source, {"id": "bad", "x": "[-1, 0, 0]"})
    redis_client.xadd(streams.source, {"id": "good", "x": "[1, 2, 3]"})
    config = streams.config(max_deliveries=3, claim_idle_ms=50)
    async with consuming(plane_settings(stream_models, config), "failing"):
        await wait_for(lambda: redis_client.xlen(streams.dead) == 1)
    assert list(_results(redis_client, streams.sink)) == ["good"]
    letter = _results(redis_client, streams.dead)["bad"]
    assert letter["attempts"] == "4"
    assert "3" in orjson.loads(letter["error"])["error"]
    assert _pending(redis_client, streams) == 0


async def test_results_also_go_to_keys_with_a_ttl(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    tag = streams.source.removeprefix("tx-")
    redis_client.xadd(streams.source, {"id": "a", "x": "[0.5, 1, 0]"})
    config = streams.config(results_key=f"score:{tag}:{{id}}", ttl_seconds="1h")
    async with consuming(plane_settings(stream_models, config), "ranged"):
        await wait_for(lambda: redis_client.xlen(streams.sink) == 1)
    key = f"score:{tag}:a"
    assert orjson.loads(redis_client.get(key)) == {
        "id": "a", "model": "ranged", "version": "1", "y": 1.5,
    }  # fmt: skip
    assert 3500 * 1000 < redis_client.pttl(key) <= 3600 * 1000


async def test_an_entry_answered_by_a_claiming_consumer_is_not_answered_twice(
    streams: Streams, redis_client: Any
) -> None:
    """A slow consumer whose entry was claimed and answered writes no second result."""
    redis_client.xadd(streams.source, {"id": "only"})

    def broker(name: str) -> RedisBroker:
        return RedisBroker(
            REDIS, streams.source, streams.sink, streams.dead, streams.group, name,
            claim_idle_ms=1,
        )  # fmt: skip

    slow, fast = broker("slow"), broker("fast")
    await slow.start()
    await fast.start()
    try:
        (mine,) = await slow.fetch(10, 100)
        await asyncio.sleep(0.01)
        (claimed,) = await fast.fetch(10, 100)
        assert claimed.attempts == 2
        await fast.settle([Result(claimed, {"id": "only", "by": "fast"}, "only")], [], [])
        await slow.settle([Result(mine, {"id": "only", "by": "slow"}, "only")], [], [])
    finally:
        await slow.close()
        await fast.close()
    assert [f["by"] for _, f in redis_client.xrange(streams.sink)] == ["fast"]
    assert _pending(redis_client, streams) == 0


def test_sigkill_of_one_of_two_consumers_loses_nothing_and_duplicates_nothing(
    stream_models: Path, streams: Streams, redis_client: Any, tmp_path: Path
) -> None:
    total = 10_000
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(total, 20)).astype(np.float32).round(4)
    with redis_client.pipeline(transaction=False) as pipe:
        for i, row in enumerate(rows):
            pipe.xadd(streams.source, {"id": str(i), "input": json.dumps(row.tolist())})
        pipe.execute()
    extra = ("--claim-idle-ms", "1000", "--batch-size", "32")
    first = start_consumer(stream_models, streams, "demo", "c1", tmp_path / "c1.log", *extra)
    second = start_consumer(stream_models, streams, "demo", "c2", tmp_path / "c2.log", *extra)
    try:
        wait_sync(lambda: redis_client.xlen(streams.sink) >= 2000)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert redis_client.xlen(streams.sink) < total, "killed after the end: test proves nothing"
        wait_sync(
            lambda: (
                redis_client.xlen(streams.sink) >= total and _pending(redis_client, streams) == 0
            ),
            timeout=300,
        )
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    assert second.returncode == 0, (tmp_path / "c2.log").read_text()[-3000:]
    ids = [fields["id"] for _, fields in redis_client.xrange(streams.sink)]
    assert len(ids) == total and set(ids) == {str(i) for i in range(total)}
    assert redis_client.xlen(streams.dead) == 0
    assert _pending(redis_client, streams) == 0


def test_sigterm_drains_in_flight_batches_and_exits_zero(
    stream_models: Path, streams: Streams, redis_client: Any, tmp_path: Path
) -> None:
    total = 3000
    with redis_client.pipeline(transaction=False) as pipe:
        for i in range(total):
            pipe.xadd(streams.source, {"id": str(i), "x": json.dumps([0.5, i % 10, 0])})
        pipe.execute()
    from tests.conftest import free_port

    port = free_port()
    process = start_consumer(
        stream_models, streams, "ranged", "solo", tmp_path / "solo.log",
        "--batch-size", "8", "--metrics-port", str(port),
    )  # fmt: skip
    try:
        wait_sync(lambda: redis_client.xlen(streams.sink) >= 200)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'inferline_stream_messages_total{model="ranged",outcome="scored"}' in metrics
        assert "inferline_stream_batch_size_bucket" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "solo.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Everything read was scored and acknowledged; the rest is still unread (lag).
    assert _pending(redis_client, streams) == 0
    (group,) = [g for g in redis_client.xinfo_groups(streams.source) if g["name"] == streams.group]
    assert redis_client.xlen(streams.sink) + group["lag"] == total


def test_status_reports_lag_pending_and_dead_letters(streams: Streams, redis_client: Any) -> None:
    redis_client.xadd(streams.source, {"id": "1"})
    redis_client.xadd(streams.source, {"id": "2"})
    redis_client.xgroup_create(streams.source, streams.group, id="0")
    redis_client.xreadgroup(streams.group, "c", {streams.source: ">"}, count=1)
    redis_client.xadd(streams.dead, {"id": "x"})
    reply = subprocess.run(
        [sys.executable, "-m", "inferline", "stream", "status", "--json",
         "--source", streams.url(streams.source), "--sink", streams.url(streams.sink),
         "--dead-letter", streams.dead, "--group", streams.group],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    report = json.loads(reply.stdout)
    (group,) = report["groups"]
    assert (group["lag"], group["pending"], report["dead_letters"]) == (1, 1, 1)
    assert group["consumers"][0]["name"] == "c"


async def test_an_entry_that_is_not_utf8_goes_to_the_dead_letter_and_the_rest_is_scored(
    stream_models: Path, streams: Streams, redis_client: Any
) -> None:
    import redis

    raw = redis.Redis.from_url(REDIS)  # bytes in, as any producer may write them
    try:
        raw.xadd(streams.source, {b"id": b"bad", b"x": b"\xff\xfe[1, 2, 3]"})
        raw.xadd(streams.source, {b"id": b"good", b"x": b"[0.5, 1, 0]"})
    finally:
        raw.close()
    config = streams.config(claim_idle_ms=50)
    async with consuming(plane_settings(stream_models, config), "ranged"):
        await wait_for(lambda: redis_client.xlen(streams.dead) == 1, timeout=30)
        await wait_for(lambda: redis_client.xlen(streams.sink) == 1, timeout=30)
    assert list(_results(redis_client, streams.sink)) == ["good"]
    assert list(_results(redis_client, streams.dead)) == ["bad"]
    assert _pending(redis_client, streams) == 0
