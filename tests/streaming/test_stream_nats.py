"""NATS JetStream: no message lost across a consumer killed and restarted; dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.nats

NATS = "nats://127.0.0.1:4222"


@pytest.fixture
async def js() -> AsyncIterator[Any]:
    import nats

    nc = await nats.connect(NATS)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def subjects(js: Any) -> AsyncIterator[dict[str, str]]:
    from nats.js.errors import NotFoundError

    tag = uuid.uuid4().hex[:10]
    names = {"source": f"tx-{tag}", "sink": f"scores-{tag}", "dead": f"tx-{tag}-dead"}
    for subject in names.values():
        await js.add_stream(name=f"T_{subject}", subjects=[subject])
    yield names
    for subject in names.values():
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"T_{subject}")


async def _read_all(js: Any, subject: str) -> list[dict[str, Any]]:
    info = await js.stream_info(f"T_{subject}")
    docs = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(f"T_{subject}", seq)
        docs.append(json.loads(msg.data))
    return docs


async def _count(js: Any, subject: str) -> int:
    return int((await js.stream_info(f"T_{subject}")).state.messages)


async def _wait(js: Any, subject: str, n: int, timeout: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _count(js, subject) < n:
        if loop.time() > deadline:
            pytest.fail(f"{subject} did not reach {n} messages within {timeout}s")
        await asyncio.sleep(0.1)


def _start(
    models: Path, subjects: dict[str, str], group: str, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "inferline", "stream", "ranged", "--model-dir", str(models),
        "--source", f"{NATS}/{subjects['source']}", "--sink", f"{NATS}/{subjects['sink']}",
        "--dead-letter", subjects["dead"], "--group", group, "--claim-idle-ms", "1000",
        "--batch-size", "16", "--max-deliveries", "3",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


async def test_no_message_is_lost_across_a_killed_and_restarted_consumer(
    js: Any, subjects: dict[str, str], stream_models: Path, tmp_path: Path
) -> None:
    total = 2000
    poison = {str(i) for i in range(total) if i % 100 == 3}
    for i in range(total):
        x = [5, 0, 0] if str(i) in poison else [0.5, i % 10, 0]
        await js.publish(subjects["source"], json.dumps({"id": str(i), "x": x}).encode())
    group = f"g{uuid.uuid4().hex[:8]}"
    first = _start(stream_models, subjects, group, tmp_path / "first.log")
    try:
        await _wait(js, subjects["sink"], 300)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert await _count(js, subjects["sink"]) < total - len(poison)
        second = _start(stream_models, subjects, group, tmp_path / "second.log")
        try:
            await _wait(js, subjects["sink"], total - len(poison), timeout=300)
            await _wait(js, subjects["dead"], len(poison))
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    results = await _read_all(js, subjects["sink"])
    ids = [doc["id"] for doc in results]
    # Results republished after the kill are dropped by JetStream (Nats-Msg-Id): one per id.
    assert sorted(ids, key=int) == sorted(set(map(str, range(total))) - poison, key=int)
    for doc in results:
        assert doc["model"] == "ranged" and doc["y"] == 0.5 + int(doc["id"]) % 10
    dead = await _read_all(js, subjects["dead"])
    assert {doc["id"] for doc in dead} == poison
    assert all(json.loads(doc["payload"])["x"] == [5, 0, 0] for doc in dead)
    info = await js.consumer_info(f"T_{subjects['source']}", group)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_status_reports_length_lag_pending_and_dead_letters(
    js: Any, subjects: dict[str, str]
) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    for i in range(5):
        await js.publish(subjects["source"], json.dumps({"id": str(i)}).encode())
    await js.publish(subjects["dead"], b"{}")
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = ConsumerConfig(durable_name=group, ack_policy=AckPolicy.EXPLICIT, ack_wait=60)
    sub = await js.pull_subscribe(subjects["source"], durable=group, config=config)
    first, _second = await sub.fetch(2, timeout=5)
    await first.ack_sync()
    command = [
        sys.executable, "-m", "inferline", "stream", "status", "--json",
        "--source", f"{NATS}/{subjects['source']}", "--dead-letter", subjects["dead"],
        "--group", group,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    (info,) = report["groups"]
    assert (report["stream"], report["length"], report["dead_letters"]) == (
        subjects["source"], 5, 1,
    )  # fmt: skip
    assert (info["name"], info["lag"], info["pending"]) == (group, 3, 1)
