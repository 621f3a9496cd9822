"""Payload logging: nothing lost while the queue has room, drops counted when it has not,
and each sink writing to the real thing (files, Redis, PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis

from inferline.monitoring.payloads import (
    FileSink,
    PayloadLogger,
    PostgresSink,
    RedisSink,
    encode_record,
)
from inferline.monitoring.records import InferenceRecord
from inferline.settings import PayloadLogSettings


def record(i: int, model: str = "fraud") -> InferenceRecord:
    return InferenceRecord(
        request_id=f"r{i}",
        model=model,
        version="3",
        protocol="rest",
        started=time.time(),
        latency=0.001,
        status=200,
        inputs={
            "x": np.array([[i, i + 1]], dtype=np.float32),
            "card": np.array([b"4111"], dtype=object),
        },
        outputs={"y": np.array([i * 2])},
    )


def configs(**per_model: PayloadLogSettings):
    return lambda model, version: per_model.get(model, PayloadLogSettings())


async def test_file_sink_keeps_every_record_when_there_is_room(tmp_path: Path) -> None:
    log = PayloadLogger(FileSink(tmp_path, 10**9, 3), configs(), queue_size=2000)
    await log.start()
    for i in range(1500):
        log.observe(record(i))
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the writer run, as a server's loop would
    await log.stop()
    lines = (tmp_path / "payloads.jsonl").read_text().splitlines()
    assert log.dropped == 0 and log.written == 1500
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(1500)]
    first = json.loads(lines[7])
    assert first["inputs"] == {"x": [[7.0, 8.0]], "card": ["4111"]} and first["outputs"] == {
        "y": [14]
    }
    assert first["model"] == "fraud" and first["version"] == "3" and first["latency_ms"] == 1.0


class BlockedSink:
    """A sink that never finishes writing until released: the queue must fill up."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.lines: list[bytes] = []

    async def write(self, lines: list[bytes]) -> None:
        await self.release.wait()
        self.lines += lines

    async def close(self) -> None:
        return None


async def test_full_queue_drops_and_counts_never_blocks() -> None:
    sink = BlockedSink()
    drops = []
    log = PayloadLogger(sink, configs(), queue_size=10)
    log.on_drop = lambda count: drops.extend([1] * count)
    await log.start()
    log.observe(record(0))
    await asyncio.sleep(0.05)  # the writer takes record 0 and blocks in the sink
    for i in range(1, 51):
        log.observe(record(i))  # returns at once whatever the sink does
    assert log.dropped == 40 and len(drops) == 40
    sink.release.set()
    await log.stop()
    assert len(sink.lines) == 11


async def test_sampling_and_redaction_per_model(tmp_path: Path) -> None:
    log = PayloadLogger(
        FileSink(tmp_path, 10**9, 3),
        configs(
            fraud=PayloadLogSettings(redact=["card"]), noisy=PayloadLogSettings(sample_rate=0.0)
        ),
        queue_size=100,
    )
    await log.start()
    for i in range(20):
        log.observe(record(i))
        log.observe(record(i, model="noisy"))
    await log.stop()
    docs = [json.loads(line) for line in (tmp_path / "payloads.jsonl").read_text().splitlines()]
    assert len(docs) == 20 and {d["model"] for d in docs} == {"fraud"}
    assert all(d["inputs"]["card"] == "[redacted]" and d["inputs"]["x"] for d in docs)


async def test_file_sink_rotates(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=2000, backups=2)
    for i in range(40):
        await sink.write([encode_record(record(i), frozenset())])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["payloads.jsonl", "payloads.jsonl.1", "payloads.jsonl.2"]


@pytest.mark.redis
async def test_redis_stream_sink() -> None:
    stream = f"inferline-test:{uuid.uuid4().hex}"
    sink = RedisSink("redis://127.0.0.1:6379/0", stream=stream)
    log = PayloadLogger(sink, configs(), queue_size=100)
    await log.start()
    for i in range(25):
        log.observe(record(i))
    await log.stop()
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        entries = client.xrange(stream)
        assert [json.loads(fields[b"record"])["request_id"] for _, fields in entries] == [
            f"r{i}" for i in range(25)
        ]
    finally:
        client.delete(stream)
        client.close()


@pytest.mark.postgres
async def test_postgres_table_sink(postgres_url: str) -> None:
    log = PayloadLogger(PostgresSink(postgres_url), configs(), queue_size=100)
    await log.start()
    for i in range(30):
        log.observe(record(i))
    await log.stop()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT request_id, model, version, record->'outputs'->'y' FROM inferline_payloads ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == [f"r{i}" for i in range(30)]
    assert rows[5][1:] == ("fraud", "3", [10])


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0.1, 2.5e-8, -3.0]], dtype=np.float32),
        np.array([[1, -2], [3, 4]], dtype=np.int64),
        np.array([True, False]),
        np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
        np.array([1.5, 2.25], dtype=">f8"),  # big-endian
        np.array([0.5, 1.0], dtype=np.float16),
        np.array(["a", "b\u00e9"]),
        np.array([b"x", "y", 3], dtype=object),
    ],
)
def test_every_tensor_layout_encodes_to_its_values(array: np.ndarray) -> None:
    """Numeric arrays go to orjson as they are; whatever it refuses takes the converting path."""
    doc = json.loads(
        encode_record(
            InferenceRecord("r", "m", "1", "rest", 0.0, 0.0, 200, {"a": array}, {"b": array}),
            frozenset(),
        )
    )
    for logged in (doc["inputs"]["a"], doc["outputs"]["b"]):
        if array.dtype.kind in "OSU":
            assert logged == [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        else:  # float32 is written at its own precision (0.1, not 0.10000000149011612)
            assert np.array_equal(np.asarray(logged, dtype=array.dtype), array)
            assert np.asarray(logged).shape == array.shape
    assert doc["timestamp"] == "1970-01-01T00:00:00+00:00".replace("+00:00", "Z")
