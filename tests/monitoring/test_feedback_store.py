"""The feedback store shared in Redis: workers join each other's requests (real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics

from inferline.cli.demo import demo_data
from inferline.errors import Unavailable
from inferline.monitoring.feedback_redis import pack_pending, unpack_pending
from inferline.monitoring.feedback_store import LocalStore
from inferline.monitoring.monitor import Monitor
from inferline.monitoring.records import InferenceRecord
from inferline.server import build_server_app
from inferline.settings import MonitoringSettings, QualitySettings, Settings
from tests.conftest import free_port, start_server, stop_server

REDIS = "redis://127.0.0.1:6379/0"
EXACT = {"rtol": 1e-12, "atol": 0}


@pytest.fixture
def prefix() -> Iterator[str]:
    """Keys of this test only, deleted afterwards (the Redis server is shared)."""
    name = f"inferline-test:{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(REDIS)
    try:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
    except redis.ConnectionError:
        pass  # the test was skipped or Redis is down: nothing was written
    finally:
        client.close()


def shared(prefix: str, url: str = REDIS, **quality: float) -> MonitoringSettings:
    return MonitoringSettings(
        quality=QualitySettings(store_url=url, store_prefix=prefix, **quality)  # type: ignore[arg-type]
    )


def answered(request_id: str, scores: np.ndarray, at: float | None = None) -> InferenceRecord:
    """A binary classifier's answer: the argmax label and float32 probabilities."""
    return InferenceRecord(
        request_id, "fraud", "1", "rest", time.time() if at is None else at, 0.01, 200,
        {"input": np.zeros((len(scores), 3), np.float32)},
        {"label": scores.argmax(axis=1).astype(np.int64), "probabilities": scores.astype(np.float32)},
    )  # fmt: skip


async def written(*keys: str) -> None:
    """Wait until the writer tasks have written these keys (off the request path)."""
    client = redis.asyncio.Redis.from_url(REDIS)
    try:
        for _ in range(1000):  # polls for up to ~10 s: the writer flushes every 10 ms
            if await client.exists(*keys) == len(keys):
                return
            await asyncio.sleep(0.01)
        pytest.fail("answers were not written")
    finally:
        await client.aclose()


def random_scores(rng: np.random.Generator, rows: int) -> np.ndarray:
    first = rng.random(rows)
    return np.stack([first, 1 - first], axis=1)


@pytest.mark.redis
async def test_two_monitors_share_answers_and_figures(prefix: str) -> None:
    """Two Monitors (two workers): each joins the other's requests; both report the same."""
    rng = np.random.default_rng(11)
    first, second = Monitor(shared(prefix)), Monitor(shared(prefix))
    await first.start()
    await second.start()
    try:
        requests = []
        for i in range(120):  # batches of 1 to 3 rows, answered by either worker
            scores = random_scores(rng, 1 + i % 3)
            truth = rng.integers(0, 2, len(scores))
            (first if i % 2 else second).observe(answered(f"r{i}", scores))
            requests.append((f"r{i}", scores, truth))
        await written(*(f"{prefix}p:{rid}" for rid, _, _ in requests))
        # Each truth goes to the worker that did not answer the request.
        to_first = [
            (rid, truth.tolist()) for i, (rid, _, truth) in enumerate(requests) if not i % 2
        ]
        to_second = [(rid, truth.tolist()) for i, (rid, _, truth) in enumerate(requests) if i % 2]
        assert await first.feedback(to_first) == {"accepted": 60, "unknown": [], "rejected": []}
        assert await second.feedback(to_second) == {"accepted": 60, "unknown": [], "rejected": []}
        assert (await first.feedback([to_second[0]]))["unknown"] == [to_second[0][0]]

        reports = [
            await asyncio.to_thread(monitor.quality_report, "fraud", "1")
            for monitor in (first, second)
        ]
        assert reports[0] == reports[1]
        scores = np.concatenate([s for _, s, _ in requests]).astype(np.float32)
        truth = np.concatenate([t for _, _, t in requests])
        predicted = scores.argmax(axis=1)
        got = reports[0]["metrics"]
        assert reports[0]["pairs"] == len(truth) == 240
        for name, expected in {
            "accuracy": metrics.accuracy_score(truth, predicted),
            "precision": metrics.precision_score(truth, predicted),
            "recall": metrics.recall_score(truth, predicted),
            "f1": metrics.f1_score(truth, predicted),
            "roc_auc": metrics.roc_auc_score(truth, scores[:, 1]),
        }.items():
            np.testing.assert_allclose(got[name], expected, **EXACT, err_msg=name)

        # The gauges read the same figures in both; a worker that never answered this
        # version would list it too (it is in the store).
        await asyncio.to_thread(first.refresh)
        await asyncio.to_thread(second.refresh)
        assert first.latest[("fraud", "1")]["quality"] == reports[0]
        assert second.latest[("fraud", "1")]["quality"] == reports[0]
        third = Monitor(shared(prefix))
        await asyncio.to_thread(third.refresh)
        assert third.versions("fraud") == ["1"]
        assert third.latest[("fraud", "1")]["quality"] == reports[0]
    finally:
        await first.stop()
        await second.stop()


@pytest.mark.redis
async def test_a_refused_truth_may_be_sent_again_to_another_worker(prefix: str) -> None:
    first, second = Monitor(shared(prefix)), Monitor(shared(prefix))
    await first.start()
    first.observe(answered("batch", np.array([[0.2, 0.8], [0.9, 0.1]])))
    await written(f"{prefix}p:batch")  # by the first's writer task, off the request path
    answer = await second.feedback([("batch", [1])])
    assert answer["rejected"] == [
        {"request_id": "batch", "error": "1 truth value(s) for 2 prediction(s)"}
    ]
    assert await first.feedback([("batch", [1, 0])]) == {
        "accepted": 1,
        "unknown": [],
        "rejected": [],
    }
    assert (await second.feedback([("batch", [1, 0])]))["unknown"] == ["batch"]
    report = await asyncio.to_thread(second.quality_report, "fraud", "1")
    assert report["pairs"] == 2 and report["metrics"]["accuracy"] == 1.0
    await first.stop()
    await second.stop()


@pytest.mark.redis
async def test_redis_keeps_the_bounds(prefix: str) -> None:
    """At most ``pending`` waiting (the oldest go), none older than ``pending_seconds``,
    and a window of the last ``window`` pairs."""
    now = [1000.0]
    settings = shared(prefix, pending=3, pending_seconds=60, window=4)
    monitor = Monitor(settings, clock=lambda: now[0])
    one = np.array([[0.3, 0.7]])
    for i in range(5):
        monitor.observe(answered(f"r{i}", one, at=now[0]))
    monitor.observe(answered("", one, at=now[0]))  # no id: nothing to join
    assert (await monitor.feedback([("r0", 1), ("r1", 1)]))["unknown"] == ["r0", "r1"]
    monitor.observe(answered("late", one, at=now[0]))
    now[0] += 61
    answer = await monitor.feedback([("r2", 1), ("r3", 0), ("r4", 1), ("late", 1)])
    assert answer["accepted"] == 0  # all too old by their own time
    client = redis.Redis.from_url(REDIS)
    try:
        assert client.zcard(f"{prefix}order") == 0  # taken ids leave the order too
    finally:
        client.close()
    for i in range(6):
        monitor.observe(answered(f"w{i}", one, at=now[0]))
    assert (await monitor.feedback([(f"w{i}", i % 2) for i in range(3, 6)]))["accepted"] == 3
    assert (await monitor.feedback([(f"w{i}", 1) for i in range(3)]))["unknown"] == [
        "w0",
        "w1",
        "w2",
    ]
    await monitor.feedback([])  # nothing to do
    monitor.observe(answered("x", np.array([[0.8, 0.2], [0.6, 0.4]]), at=now[0]))
    assert (await monitor.feedback([("x", [0, 0])]))["accepted"] == 1
    report = await asyncio.to_thread(monitor.quality_report, "fraud", "1")
    assert report["pairs"] == 4  # w3, w4, w5, x (two rows): trimmed to the last four
    assert report["metrics"]["accuracy"] == 0.75  # w4 (label 1, truth 0) is wrong
    await monitor.stop()


def test_outputs_survive_the_trip_bit_for_bit() -> None:
    outputs = {
        "label": np.array([3, -1], dtype=np.int64),
        "probabilities": np.array([[0.1, 0.9], [1 / 3, 2 / 3]], dtype=np.float32),
        "half": np.array([1.5], dtype=np.float16),
        "flag": np.array([[True], [False]]),
        "text": np.array([b"cat", "\u00e9t\u00e9".encode()], dtype=object),
        "fixed": np.array(["ab", "cd"], dtype="<U2"),
        "grid": np.arange(12, dtype=np.int8).reshape(2, 3, 2),
    }
    pending = unpack_pending(pack_pending(("fraud", "7", 1234.5, outputs)))
    assert (pending.model, pending.version, pending.at) == ("fraud", "7", 1234.5)
    assert list(pending.outputs) == list(outputs)
    for name, array in outputs.items():
        got = pending.outputs[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array, err_msg=name)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def test_redis_down_answers_requests_and_counts_what_it_drops(model_dir: Path) -> None:
    """Requests are answered as ever; feedback and quality answer 503 (send again later)."""
    closed = free_port()
    settings = Settings(
        model_dir=model_dir,
        grpc_port=None,
        monitoring=shared("inferline-test:", url=f"redis://127.0.0.1:{closed}/0"),
    )
    app = build_server_app(settings)
    row = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}]}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            for i in range(20):
                response = await client.post(
                    "/v2/models/demo/infer", json=row, headers={"x-request-id": f"down-{i}"}
                )
                assert response.status_code == 200
            dropped = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                dropped = samples(
                    (await client.get("/metrics")).text, "inferline_feedback_dropped_total"
                )
                if dropped and dropped[0][1] == 20:
                    break
                await asyncio.sleep(0.05)
            assert dropped == [({}, 20.0)]
            response = await client.post(
                "/api/v1/feedback", json={"request_id": "down-0", "truth": 1}
            )
            assert response.status_code == 503
            message = response.json()["error"]
            assert f"feedback store at redis://127.0.0.1:{closed} is unreachable" in message
            assert "send the truths again later" in message
            response = await client.get("/api/v1/models/demo/quality")
            assert response.status_code == 503 and "unreachable" in response.json()["error"]
            assert (await client.post("/v2/models/demo/infer", json=row)).status_code == 200


async def test_an_unreachable_store_fails_feedback_not_observe() -> None:
    monitor = Monitor(shared("inferline-test:", url=f"redis://127.0.0.1:{free_port()}/0"))
    drops: list[int] = []
    monitor.store.on_drop = drops.append
    monitor.observe(answered("a", np.array([[0.5, 0.5]])))
    with pytest.raises(Unavailable, match="send the truths again later"):
        await monitor.feedback([("a", 1)])
    assert sum(drops) == monitor.store.dropped == 1
    assert monitor.refresh() == []  # figures not refreshed, nothing raised
    await monitor.stop()


@pytest.mark.e2e
@pytest.mark.redis
def test_workers_join_every_truth_through_redis(
    model_dir: Path, tmp_path: Path, prefix: str
) -> None:
    """``--workers 2``: every truth is joined whichever worker answered the request."""
    env = {
        "INFERLINE_MONITORING__QUALITY__STORE_URL": REDIS,
        "INFERLINE_MONITORING__QUALITY__STORE_PREFIX": prefix,
        "INFERLINE_MONITORING__INTERVAL_SECONDS": "0.2",
    }
    server = start_server(model_dir, tmp_path / "workers.log", "--workers", "2", env=env)
    base = f"http://{server.http_url}"
    try:
        features, labels = demo_data(2000)
        rows, truth = features[-150:], labels[-150:]
        predicted, scores = [], []
        for i, row in enumerate(rows):  # a new connection each time: both workers answer
            body = {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 20], "data": row.tolist()}
                ]
            }
            with httpx.Client(base_url=base) as client:
                response = client.post(
                    "/v2/models/demo/infer", json=body, headers={"x-request-id": f"q{i}"}
                )
            assert response.status_code == 200, response.text
            outputs = {out["name"]: out["data"] for out in response.json()["outputs"]}
            predicted.append(outputs["label"][0])
            scores.append(outputs["probabilities"][1])
        for i in range(75):  # one truth per call, on new connections too
            with httpx.Client(base_url=base) as client:
                response = client.post(
                    "/api/v1/feedback", json={"request_id": f"q{i}", "truth": int(truth[i])}
                )
            assert response.json() == {"accepted": 1, "unknown": [], "rejected": []}
        rest = [{"request_id": f"q{i}", "truth": int(truth[i])} for i in range(75, 150)]
        with httpx.Client(base_url=base) as client:
            response = client.post("/api/v1/feedback", json={"feedback": rest})
        assert response.json() == {"accepted": 75, "unknown": [], "rejected": []}

        reports = []
        for _ in range(4):  # whichever worker answers, the figures are the same
            with httpx.Client(base_url=base) as client:
                (report,) = client.get("/api/v1/models/demo/quality").json()["versions"]
            reports.append(report)
        assert all(report == reports[0] for report in reports)
        assert reports[0]["pairs"] == 150
        got = reports[0]["metrics"]
        np.testing.assert_allclose(
            got["accuracy"], metrics.accuracy_score(truth, predicted), **EXACT
        )
        np.testing.assert_allclose(got["f1"], metrics.f1_score(truth, predicted), **EXACT)
        np.testing.assert_allclose(got["roc_auc"], metrics.roc_auc_score(truth, scores), **EXACT)

        # The gauges too, from any worker, once each has refreshed.
        seen: list[float] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen[-4:] != [got["accuracy"]] * 4:
            with httpx.Client(base_url=base) as client:
                found = samples(client.get("/metrics").text, "inferline_model_quality")
            seen += [v for labels, v in found if labels["metric"] == "accuracy"] or [-1.0]
            time.sleep(0.05)
        assert seen[-4:] == [got["accuracy"]] * 4
    finally:
        stop_server(server)
    assert (tmp_path / "workers.log").read_text().count("Application startup complete") == 2


async def test_the_local_store_takes_long_lists_in_slices() -> None:
    """More ids than one slice (the loop runs between slices); an id twice is taken once."""
    store = LocalStore(QualitySettings())
    for i in range(300):
        store.remember(f"r{i}", "fraud", "1", time.time(), {"label": np.array([i])})
    ids = [f"r{i}" for i in range(300)] + ["r5", "nope"]
    taken = await store.take(ids)
    assert [p.outputs["label"][0] for p in taken[:300] if p is not None] == list(range(300))
    assert taken[300:] == [None, None]
