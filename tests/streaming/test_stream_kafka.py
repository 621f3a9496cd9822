"""Kafka on librdkafka's mock cluster: no message lost across a killed and restarted
consumer (duplicates by id allowed, as documented), poison to the dead-letter topic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka", reason="pip install 'inferline[kafka]'")


@pytest.fixture(scope="module")
def mock_cluster() -> Iterator[str]:
    """A one-broker mock cluster living in this process's producer; its bootstrap address."""
    owner = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    owner.flush(5)


class Reader:
    """Everything on a topic, read by a group of its own."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
             "auto.offset.reset": "earliest", "log_level": 3}
        )  # fmt: skip
        self.consumer.subscribe([topic])
        self.docs: list[dict[str, Any]] = []

    def poll(self) -> int:
        for msg in self.consumer.consume(500, 0.2):
            if msg.error() is None:
                self.docs.append(json.loads(msg.value()))
        return len({doc["id"] for doc in self.docs})

    def settle(self) -> int:
        """Read until nothing new arrives for a second; the distinct ids seen."""
        seen, quiet = -1, time.monotonic()
        while time.monotonic() - quiet < 1.0:
            now = len(self.docs)
            self.poll()
            if len(self.docs) != now or seen < 0:
                seen, quiet = len(self.docs), time.monotonic()
        return len({doc["id"] for doc in self.docs})

    def wait(self, n: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.poll() < n:
            if time.monotonic() > deadline:
                pytest.fail(f"{n} distinct ids not reached within {timeout}s")


def _start(
    models: Path, bootstrap: str, topics: dict[str, str], group: str, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "inferline", "stream", "ranged", "--model-dir", str(models),
        "--source", f"kafka://{bootstrap}/{topics['source']}",
        "--sink", f"kafka://{bootstrap}/{topics['sink']}",
        "--dead-letter", topics["dead"], "--group", group, "--batch-size", "16",
    ]  # fmt: skip
    env = {**os.environ, "INFERLINE_STREAM__KAFKA_OPTIONS": json.dumps(
        {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 10000,
         "log_level": 3})}  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def test_no_message_is_lost_across_a_killed_and_restarted_consumer(
    mock_cluster: str, stream_models: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {"source": f"tx-{tag}", "sink": f"scores-{tag}", "dead": f"tx-{tag}-dead"}
    total = 5000
    poison = {str(i) for i in range(total) if i % 100 == 3}
    sink, dead = Reader(mock_cluster, topics["sink"]), Reader(mock_cluster, topics["dead"])

    def produce() -> None:
        """A steady flow (about 10 s), so the kill lands in the middle of it."""
        producer = confluent_kafka.Producer({"bootstrap.servers": mock_cluster, "log_level": 3})
        for i in range(total):
            x = [5, 0, 0] if str(i) in poison else [0.5, i % 10, 0]
            producer.produce(topics["source"], json.dumps({"id": str(i), "x": x}).encode())
            if i % 100 == 99:
                producer.flush(30)
                time.sleep(0.2)
        assert producer.flush(30) == 0

    flow = threading.Thread(target=produce)
    flow.start()
    group = f"g-{tag}"
    first = _start(stream_models, mock_cluster, topics, group, tmp_path / "first.log")
    second = None
    try:
        sink.wait(300)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert sink.settle() < total - len(poison), "killed after the end: proves nothing"
        second = _start(stream_models, mock_cluster, topics, group, tmp_path / "second.log")
        sink.wait(total - len(poison))
        dead.wait(len(poison))
        # Drain only once the second consumer has run (its signal handlers are in place).
        log = tmp_path / "second.log"
        deadline = time.monotonic() + 60
        while "consuming" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        flow.join(timeout=120)
        sink.consumer.close()
        dead.consumer.close()
    ids = {doc["id"] for doc in sink.docs}
    assert ids == {str(i) for i in range(total)} - poison
    for doc in sink.docs:
        assert doc["model"] == "ranged" and doc["y"] == 0.5 + int(doc["id"]) % 10
    assert {doc["id"] for doc in dead.docs} == poison


def test_status_reports_length_lag_and_dead_letters(mock_cluster: str) -> None:
    tag = uuid.uuid4().hex[:8]
    source, dead, group = f"tx-{tag}", f"tx-{tag}-dead", f"g-{tag}"
    producer = confluent_kafka.Producer({"bootstrap.servers": mock_cluster, "log_level": 3})
    for i in range(10):
        producer.produce(source, json.dumps({"id": str(i)}).encode(), partition=0)
    for i in range(2):
        producer.produce(dead, json.dumps({"id": str(i)}).encode(), partition=0)
    assert producer.flush(10) == 0
    committer = confluent_kafka.Consumer(
        {"bootstrap.servers": mock_cluster, "group.id": group, "log_level": 3}
    )
    committer.commit(offsets=[confluent_kafka.TopicPartition(source, 0, 4)], asynchronous=False)
    committer.close()
    reply = subprocess.run(
        [sys.executable, "-m", "inferline", "stream", "status", "--json",
         "--source", f"kafka://{mock_cluster}/{source}", "--group", group],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    report = json.loads(reply.stdout)
    (info,) = report["groups"]
    assert (report["length"], info["name"], info["lag"]) == (10, group, 6)
    assert (info["pending"], report["dead_letters"]) == (None, 2)


def test_status_of_a_missing_topic_is_a_clear_error(mock_cluster: str) -> None:
    reply = subprocess.run(
        [sys.executable, "-m", "inferline", "stream", "status",
         "--source", f"kafka://{mock_cluster}/nope-{uuid.uuid4().hex[:8]}"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert reply.returncode == 2 and "does not exist" in reply.stderr
