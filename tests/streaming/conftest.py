"""Stream fixtures: unique Redis stream names, a model folder with a failing model, consumers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferline.settings import Settings, StreamSettings

REDIS = "redis://127.0.0.1:6379/0"

#: Fails (a model error, 500) for any row whose first feature is negative.
FAILING_SETTINGS = """\
runtime: python
inputs:
  - {name: x, datatype: FP64, shape: [-1, 3]}
outputs:
  - {name: y, datatype: FP64, shape: [-1]}
"""
FAILING_CODE = """\
class Model:
    def predict(self, inputs):
        x = inputs["x"]
        if (x[:, 0] < 0).any():
            raise ValueError("negative first feature")
        return {"y": x.sum(axis=1)}
"""


@dataclass
class Streams:
    source: str
    sink: str
    dead: str
    group: str

    def url(self, stream: str) -> str:
        return f"{REDIS}?stream={stream}"

    def config(self, **extra: Any) -> StreamSettings:
        values: dict[str, Any] = {
            "source": self.url(self.source),
            "sink": self.url(self.sink),
            "dead_letter": self.dead,
            "group": self.group,
            "block_ms": 100,
        }
        values.update(extra)
        return StreamSettings(**values)


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(REDIS, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def streams(redis_client: Any) -> Iterator[Streams]:
    """Stream names no other test (or run) uses; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    names = Streams(f"tx-{tag}", f"scores-{tag}", f"tx-{tag}-dead", f"g-{tag}")
    yield names
    redis_client.delete(names.source, names.sink, names.dead)
    for key in redis_client.scan_iter(f"score:{tag}:*"):
        redis_client.delete(key)


@pytest.fixture(scope="session")
def stream_models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared model folder plus ``failing`` (a model error for negative first features)."""
    root = tmp_path_factory.mktemp("stream-models")
    for entry in model_dir.iterdir():
        (root / entry.name).symlink_to(entry, target_is_directory=True)
    (root / "failing" / "1").mkdir(parents=True)
    (root / "failing" / "model-settings.yaml").write_text(FAILING_SETTINGS)
    (root / "failing" / "1" / "model.py").write_text(FAILING_CODE)
    return root


def plane_settings(models: Path, config: StreamSettings) -> Settings:
    return Settings(model_dir=models, http_port=0, grpc_port=None, stream=config)


@contextlib.asynccontextmanager
async def consuming(settings: Settings, model: str) -> AsyncIterator[asyncio.Task[None]]:
    """A consumer running in this loop; stopped (drained) when the block ends."""
    from inferline.streaming import run

    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, model, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll until ``predicate`` holds; fail after ``timeout`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def wait_sync(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.1)


def start_consumer(
    models: Path, streams: Streams, model: str, name: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``inferline stream`` in its own process."""
    command = [
        sys.executable, "-m", "inferline", "stream", model, "--model-dir", str(models),
        "--source", streams.url(streams.source), "--sink", streams.url(streams.sink),
        "--dead-letter", streams.dead, "--group", streams.group, "--consumer", name, *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
