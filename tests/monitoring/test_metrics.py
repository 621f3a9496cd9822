"""/metrics parsed with prometheus_client's own parser after known traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.server import build_server_app
from inferline.settings import Settings
from tests.conftest import start_server, stop_server

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}]}
BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 19], "data": [0.5] * 19}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_and_histograms_are_exact(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, http_port=0, grpc_port=0, metrics_refresh_seconds=0.05)
    app = build_server_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            for _ in range(7):
                assert (await client.post("/v2/models/demo/infer", json=ROW)).status_code == 200
            for _ in range(3):
                assert (await client.post("/v2/models/demo/infer", json=BAD)).status_code == 400
            assert (await client.post("/v2/models/nope/infer", json=ROW)).status_code == 404
            kitchen = json.loads(
                (Path(__file__).parents[1] / "data" / "infer_kitchen.json").read_text()
            )
            assert (await client.post("/v2/models/kitchen/infer", json=kitchen)).status_code == 200
            text = (await client.get("/metrics")).text
    found = samples(text)
    ok = {"model": "demo", "version": "1", "protocol": "rest"}
    assert value(found, "inferline_requests_total", **ok, status="200") == 7
    assert value(found, "inferline_requests_total", **ok, status="400") == 3
    assert (
        value(
            found,
            "inferline_requests_total",
            model="nope",
            version="",
            protocol="rest",
            status="404",
        )
        == 1
    )
    assert value(found, "inferline_request_duration_seconds_count", **ok) == 10
    assert value(found, "inferline_request_duration_seconds_bucket", **ok, le="+Inf") == 10
    assert (
        value(found, "inferline_batch_size_count", model="demo", version="1") == 7
    )  # one call per good request
    assert value(found, "inferline_batch_size_sum", model="demo", version="1") == 7
    assert value(found, "inferline_compute_seconds_count", model="kitchen", version="1") == 1
    assert value(found, "inferline_models_loaded") == 3
    assert value(found, "inferline_process_resident_memory_bytes") > 10_000_000


def test_workers_share_exact_counts(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "workers.log", "--workers", "2")
    try:
        sent = 0
        for _ in range(40):  # a new connection each time: the kernel spreads them over workers
            with httpx.Client(base_url=f"http://{server.http_url}") as client:
                assert client.post("/v2/models/demo/infer", json=ROW).status_code == 200
                sent += 1
        ok = {"model": "demo", "version": "1", "protocol": "rest", "status": "200"}
        for _ in range(200):  # the other worker's counts land within FLUSH_SECONDS
            with httpx.Client(base_url=f"http://{server.http_url}") as client:
                if (
                    value(samples(client.get("/metrics").text), "inferline_requests_total", **ok)
                    == sent
                ):
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the merged count never reached the requests sent")
        totals = []
        for _ in range(4):  # whichever worker answers the scrape, the merged count is the same
            with httpx.Client(base_url=f"http://{server.http_url}") as client:
                found = samples(client.get("/metrics").text)
            totals.append(
                value(
                    found,
                    "inferline_requests_total",
                    model="demo",
                    version="1",
                    protocol="rest",
                    status="200",
                )
            )
            assert (
                value(
                    found,
                    "inferline_request_duration_seconds_count",
                    model="demo",
                    version="1",
                    protocol="rest",
                )
                == sent
            )
    finally:
        stop_server(server)
    assert totals == [sent] * 4


def test_accumulated_observations_equal_prometheus_own() -> None:
    """Cells add up per loop turn; the exposition must equal observing each value."""
    import random

    from prometheus_client import CollectorRegistry

    from inferline.monitoring.metrics import Metrics
    from inferline.monitoring.records import InferenceRecord

    rng = random.Random(7)
    mine, plain = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for i in range(2000):
        latency = rng.choice([0.0001, 0.00025, 10.0, 11.0, 0.0]) if i % 7 == 0 else rng.random()
        status = rng.choice([200, 200, 400])
        record = InferenceRecord(f"r{i}", "m", "1", "rest", 0.0, latency, status, {}, None)
        mine.observe(record)  # no running loop: added at once, as a batch job would
        plain.requests.labels("m", "1", "rest", str(status)).inc()
        plain.duration.labels("m", "1", "rest").observe(latency)
        rows, waits = rng.randint(1, 300), [rng.random() / 100 for _ in range(3)]
        mine.observe_batch("m", "1", rows, latency, waits)
        plain.batch_size.labels("m", "1").observe(rows)
        plain.compute.labels("m", "1").observe(latency)
        for wait in waits:
            plain.queue_wait.labels("m", "1").observe(wait)
    got, want = samples(mine.exposition().decode()), samples(plain.exposition().decode())
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if key[0].endswith("_created"):
            continue  # when each child was made, not what it counted
        if key[0].endswith("_sum"):
            assert abs(got[key] - expected) <= 1e-9 * max(1.0, abs(expected)), key
        else:
            assert got[key] == expected, key


async def test_observations_in_a_loop_turn_reach_the_next_scrape() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from inferline.monitoring.metrics import FLUSH_SECONDS, Metrics
    from inferline.monitoring.records import InferenceRecord

    metrics = Metrics(CollectorRegistry())
    for i in range(5):
        metrics.observe(InferenceRecord(f"r{i}", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    ok = {"model": "m", "version": "1", "protocol": "rest", "status": "200"}
    assert value(samples(metrics.exposition().decode()), "inferline_requests_total", **ok) == 5
    metrics.observe(InferenceRecord("r5", "m", "1", "rest", 0.0, 0.001, 200, {}, None))

    def unscraped() -> float:
        text = generate_latest(metrics.registry).decode()
        return value(samples(text), "inferline_requests_total", **ok)

    await asyncio.sleep(0)
    assert unscraped() == 5  # not flushed every loop turn: a turn may hold one request
    for _ in range(200):  # the flush comes after FLUSH_SECONDS, no scrape needed
        await asyncio.sleep(FLUSH_SECONDS / 10)
        if unscraped() == 6:
            break
    else:
        pytest.fail("the observation never reached the Prometheus children")
