"""The embedded consumer follows the registry: a promote switches the version it scores with."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from inferline import lifecycle
from inferline.registry.store import Registry
from inferline.settings import Settings
from tests.lifecycle_models import ROWS, forest_file, probabilities
from tests.streaming.conftest import Streams, consuming, wait_for

pytestmark = pytest.mark.redis


async def test_promote_switches_the_stream_without_a_restart(
    streams: Streams, redis_client: Any, tmp_path: Path
) -> None:
    one, two = forest_file(tmp_path / "a", seed=1), forest_file(tmp_path / "b", seed=2)
    expected = {"1": probabilities(one), "2": probabilities(two)}
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts")
    executor = ThreadPoolExecutor(2)
    try:
        await lifecycle.register(registry, "fraud", one, executor, alias="production")
        await lifecycle.register(registry, "fraud", two, executor)
        settings = Settings(
            registry_url=f"sqlite:///{tmp_path / 'registry.db'}",
            artifact_dir=tmp_path / "artifacts",
            registry_poll_seconds=0.05,
            grpc_port=None,
            stream=streams.config(),
        )

        def send(tag: str) -> None:
            for i, row in enumerate(ROWS):
                redis_client.xadd(
                    streams.source, {"id": f"{tag}{i}", "input": json.dumps(row.tolist())}
                )

        async with consuming(settings, "fraud"):
            send("before")
            await wait_for(lambda: redis_client.xlen(streams.sink) == len(ROWS))
            await lifecycle.promote(registry, "fraud", 2, executor)
            # The sync polls every 50 ms: keep sending until a version-2 answer appears.
            batches = 0

            def switched() -> bool:
                nonlocal batches
                if any(f["version"] == "2" for _, f in redis_client.xrange(streams.sink)):
                    return True
                batches += 1
                send(f"after{batches}-")
                return False

            await wait_for(switched, timeout=60)
            send("final")

            def finals_in() -> bool:
                ids = {f["id"] for _, f in redis_client.xrange(streams.sink)}
                return all(f"final{i}" in ids for i in range(len(ROWS)))

            await wait_for(finals_in)
    finally:
        registry.close()
        executor.shutdown()
    results = {f["id"]: f for _, f in redis_client.xrange(streams.sink)}
    for tag, version in (("before", "1"), ("final", "2")):
        for i in range(len(ROWS)):
            got = results[f"{tag}{i}"]
            assert got["version"] == version
            np.testing.assert_array_equal(
                np.asarray(orjson.loads(got["probabilities"]), np.float32), expected[version][i]
            )
