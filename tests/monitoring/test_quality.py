"""Feedback through the HTTP API on an in-process server; figures equal scikit-learn's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge

from inferline import lifecycle
from inferline.cli.demo import demo_data
from inferline.monitoring.feedback_join import FeedbackJoin
from inferline.registry.store import Registry
from inferline.server import build_server_app
from inferline.settings import MonitoringSettings, Settings
from tests.lifecycle_models import forest_file

EXACT = {"rtol": 1e-12, "atol": 0}


def skops_file(folder: Path, estimator: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.skops"
    sio.dump(estimator, path)
    return path


def species_data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=3
    )


def price_data() -> tuple[np.ndarray, np.ndarray]:
    return make_regression(n_samples=300, n_features=5, noise=25.0, random_state=4)


@pytest.fixture
async def client(registry_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A whole server app (as ``inferline serve`` builds it) over a registry of three models."""
    artifacts = tmp_path / "artifacts"
    registry = Registry(registry_url, artifacts)
    species, price = species_data(), price_data()
    with ThreadPoolExecutor(2) as pool:
        for name, path in (
            ("fraud", forest_file(tmp_path / "fraud", seed=1)),
            ("species", skops_file(tmp_path / "species", LogisticRegression().fit(*species))),
            ("price", skops_file(tmp_path / "price", Ridge().fit(*price))),
        ):
            await lifecycle.register(registry, name, path, pool, alias="production")
    registry.close()
    settings = Settings(
        registry_url=registry_url,
        artifact_dir=artifacts,
        home=tmp_path / "home",
        grpc_port=None,
        monitoring=MonitoringSettings(interval_seconds=0.05),
    )
    app = build_server_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://inferline", timeout=60
        ) as http:
            yield http


async def serve(
    client: httpx.AsyncClient, model: str, rows: np.ndarray, datatype: str, batch: int
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Send ``rows`` in batches with our own request ids; the outputs, stacked."""
    ids, outputs = [], {}
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        body = {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": list(part.shape),
                    "data": part.ravel().tolist(),
                }
            ]
        }
        request_id = f"{model}-{start}"
        response = await client.post(
            f"/v2/models/{model}/infer", json=body, headers={"x-request-id": request_id}
        )
        assert response.status_code == 200, response.text
        ids.append(request_id)
        for out in response.json()["outputs"]:
            data = np.array(out["data"]).reshape(out["shape"])
            outputs.setdefault(out["name"], []).append(data)
    return ids, {name: np.concatenate(parts) for name, parts in outputs.items()}


async def send_truths(
    client: httpx.AsyncClient, ids: list[str], truth: np.ndarray, batch: int
) -> None:
    """Half one request id per call, half in one ``feedback`` list."""
    items = [
        {"request_id": rid, "truth": truth[i * batch : (i + 1) * batch].tolist()}
        for i, rid in enumerate(ids)
    ]
    half = len(items) // 2
    for item in items[:half]:
        response = await client.post("/api/v1/feedback", json=item)
        assert response.json() == {"accepted": 1, "unknown": [], "rejected": []}
    response = await client.post("/api/v1/feedback", json={"feedback": items[half:]})
    assert response.json() == {"accepted": len(items) - half, "unknown": [], "rejected": []}


async def quality(client: httpx.AsyncClient, model: str) -> dict:
    response = await client.get(f"/api/v1/models/{model}/quality")
    assert response.status_code == 200, response.text
    (report,) = response.json()["versions"]
    return report


async def test_classifier_and_regressor_figures_equal_sklearns(client: httpx.AsyncClient) -> None:
    features, labels = demo_data(2000)
    rows, truth = features[-200:], labels[-200:]
    ids, outputs = await serve(client, "fraud", rows, "FP32", batch=8)
    await send_truths(client, ids, truth, batch=8)
    report = await quality(client, "fraud")
    predicted, scores = outputs["label"], outputs["probabilities"][:, 1]
    assert report["task"] == "classification" and report["pairs"] == 200
    got = report["metrics"]
    assert 0.5 < got["accuracy"] < 1  # a real, imperfect classifier
    np.testing.assert_allclose(got["accuracy"], metrics.accuracy_score(truth, predicted), **EXACT)
    np.testing.assert_allclose(got["precision"], metrics.precision_score(truth, predicted), **EXACT)
    np.testing.assert_allclose(got["recall"], metrics.recall_score(truth, predicted), **EXACT)
    np.testing.assert_allclose(got["f1"], metrics.f1_score(truth, predicted), **EXACT)
    np.testing.assert_allclose(got["roc_auc"], metrics.roc_auc_score(truth, scores), **EXACT)

    features, labels = species_data()
    ids, outputs = await serve(client, "species", features[:150], "FP64", batch=5)
    await send_truths(client, ids, labels[:150], batch=5)
    got = (await quality(client, "species"))["metrics"]
    truth, predicted = labels[:150], outputs["predict"]
    for name, expected in {
        "accuracy": metrics.accuracy_score(truth, predicted),
        "precision": metrics.precision_score(truth, predicted, average="macro"),
        "recall": metrics.recall_score(truth, predicted, average="macro"),
        "f1": metrics.f1_score(truth, predicted, average="macro"),
        "roc_auc": metrics.roc_auc_score(truth, outputs["predict_proba"], multi_class="ovr"),
    }.items():
        np.testing.assert_allclose(got[name], expected, **EXACT, err_msg=name)

    features, target = price_data()
    ids, outputs = await serve(client, "price", features[:120], "FP64", batch=6)
    await send_truths(client, ids, target[:120], batch=6)
    report = await quality(client, "price")
    assert report["task"] == "regression" and report["pairs"] == 120
    got, predicted = report["metrics"], outputs["predict"]
    truth = target[:120]
    np.testing.assert_allclose(got["mae"], metrics.mean_absolute_error(truth, predicted), **EXACT)
    np.testing.assert_allclose(
        got["rmse"], metrics.root_mean_squared_error(truth, predicted), **EXACT
    )
    np.testing.assert_allclose(got["r2"], metrics.r2_score(truth, predicted), **EXACT)

    # The gauges carry the same figures once the monitor's task has refreshed them.
    accuracy = None
    for _ in range(200):
        text = (await client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "inferline_model_quality" and sample.labels == {
                    "model": "fraud",
                    "version": "1",
                    "metric": "accuracy",
                }:
                    accuracy = sample.value
        if accuracy is not None:
            break
        await asyncio.sleep(0.05)
    assert accuracy == (await quality(client, "fraud"))["metrics"]["accuracy"]


async def test_malformed_unknown_and_refused_feedback(client: httpx.AsyncClient) -> None:
    features, _ = demo_data(50)
    ids, _ = await serve(client, "fraud", features[:4], "FP32", batch=2)
    for body in (
        b"not json",
        b"[1, 2]",
        b'{"truth": 1}',
        b'{"request_id": "", "truth": 1}',
        b'{"request_id": "x", "truth": {"a": 1}}',
        b'{"request_id": "x"}',
        b'{"feedback": []}',
        b'{"feedback": [{"request_id": "x", "truth": 1}, 3]}',
    ):
        response = await client.post("/api/v1/feedback", content=body)
        assert response.status_code == 400, body
        assert set(response.json()) == {"error"}
    response = await client.post(
        "/api/v1/feedback",
        json={
            "feedback": [
                {"request_id": "never-sent", "truth": 1},
                {"request_id": ids[0], "truth": [1]},  # two rows were served
                {"request_id": ids[1], "truth": [0, 1]},
            ]
        },
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 1 and answer["unknown"] == ["never-sent"]
    assert answer["rejected"] == [
        {"request_id": ids[0], "error": "1 truth value(s) for 2 prediction(s)"}
    ]
    # A refused truth may be sent again, corrected; an accepted one only once.
    response = await client.post(
        "/api/v1/feedback",
        json={
            "feedback": [
                {"request_id": ids[0], "truth": [0, 0]},
                {"request_id": ids[1], "truth": [1, 1]},
            ]
        },
    )
    assert response.json() == {"accepted": 1, "unknown": [ids[1]], "rejected": []}
    assert (await quality(client, "fraud"))["pairs"] == 4
    missing = await client.get("/api/v1/models/nope/quality")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


# -- the join: bounded by count and age, no O(n) step ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OUT = {"label": np.array([1])}


def test_the_join_keeps_the_newest_size_entries_and_each_truth_once() -> None:
    clock = Clock()
    join = FeedbackJoin(3, 60, clock)
    for name in "abcd":
        join.remember(name, "m", "1", clock(), OUT)
    assert len(join) == 3
    assert join.take("a") is None  # the oldest went when the fourth came
    taken = join.take("b")
    assert taken is not None and (taken.model, taken.version, taken.at) == ("m", "1", 1000.0)
    assert taken.outputs is OUT
    assert join.take("b") is None  # a second truth for the same id is unknown
    join.remember("b", "m", "1", taken.at, OUT)  # a refused truth may be sent again
    assert join.take("b") is not None
    assert join.take("") is None and len(join) == 2


def test_generations_bound_the_count_and_go_whole() -> None:
    clock = Clock()
    join = FeedbackJoin(100, 60, clock, generation=10)
    for i in range(1000):
        join.remember(f"r{i}", "m", "1", clock(), {"label": np.array([i])})
        assert len(join) <= 100
    assert len(join) >= 91  # at most one generation short of the bound
    kept = [i for i in range(1000) if join.take(f"r{i}") is not None]
    assert kept == list(range(1000 - len(kept), 1000))  # the newest, in one run
    assert not join._dying  # dropped generations were freed along the way


def test_age_expires_entries_and_whole_generations() -> None:
    clock = Clock()
    join = FeedbackJoin(100, 60, clock, generation=5)
    for i in range(10):  # the first generation closes at t=1000 when the sixth comes
        join.remember(f"old{i}", "m", "1", clock(), OUT)
    clock.now += 30
    join.remember("mid", "m", "1", clock(), OUT)  # closes the second generation at t=1030
    clock.now += 45  # t=1075: the first ten are 75 s old, "mid" 45 s
    assert join.take("old9") is None  # too old by its own age...
    assert len(join) == 5  # ...though its generation, closed 45 s ago, stays a while
    assert join.take("old0") is None  # the first generation (closed 75 s ago) went whole
    join.remember("fresh", "m", "1", clock(), OUT)
    clock.now = 1091
    assert join.take("nothing") is None
    assert len(join) == 2  # the second generation went too; the open one is kept
    assert join.take("mid") is None and join.take("fresh") is not None
    join.remember("late", "m", "1", clock(), OUT)
    clock.now += 61
    assert join.take("late") is None  # an entry's own age counts, in an open generation


def test_an_id_remembered_twice_is_taken_once_newest_first() -> None:
    clock = Clock()
    join = FeedbackJoin(100, 60, clock, generation=2)
    first, second = {"label": np.array([0])}, {"label": np.array([1])}
    join.remember("x", "m", "1", clock(), first)
    for i in range(5):
        join.remember(f"r{i}", "m", "1", clock(), OUT)
    join.remember("x", "m", "2", clock(), second)
    taken = join.take("x")
    assert taken is not None and taken.version == "2" and taken.outputs is second
    assert join.take("x") is None


class Reference:
    """What the join must answer: of the last ``size`` answers remembered, those not
    taken and not older than ``seconds``."""

    def __init__(self, size: int, seconds: float) -> None:
        self.size, self.seconds = size, seconds
        self.entries: list[tuple[str, float] | None] = []  # None: taken

    def remember(self, request_id: str, at: float) -> None:
        self.entries.append((request_id, at))
        del self.entries[: -self.size]

    def take(self, request_id: str, now: float) -> float | None:
        for i, entry in enumerate(self.entries):
            if entry is not None and entry[0] == request_id:
                self.entries[i] = None
                return entry[1] if entry[1] >= now - self.seconds else None
        return None


@settings(max_examples=300, deadline=None, database=None)
@given(
    size=st.integers(1, 31),
    seconds=st.sampled_from([5.0, 50.0, 1e9]),
    steps=st.lists(
        st.tuples(st.sampled_from(["remember", "take", "again", "tick"]), st.integers(0, 40)),
        max_size=120,
    ),
)
def test_small_joins_answer_exactly_as_the_reference(
    size: int, seconds: float, steps: list[tuple[str, int]]
) -> None:
    """One entry per generation while ``size`` < 32: the bound is exact."""
    clock = Clock()
    join, reference = FeedbackJoin(size, seconds, clock), Reference(size, seconds)
    served: list[str] = []
    taken: dict[str, float] = {}
    for action, n in steps:
        if action == "remember":
            served.append(f"r{len(served)}")
            join.remember(served[-1], "m", "1", clock(), OUT)
            reference.remember(served[-1], clock())
        elif action == "take" and served:  # mostly near the oldest entry still kept
            request_id = served[max(0, len(served) - 1 - n % (size + 3))]
            expected = reference.take(request_id, clock())
            got = join.take(request_id)
            assert (got.at if got else None) == expected, request_id
            if got is not None:
                taken[request_id] = got.at
        elif action == "again" and taken:  # a refused truth: its answer goes back
            request_id = sorted(taken)[n % len(taken)]
            at = taken.pop(request_id)
            join.remember(request_id, "m", "1", at, OUT)
            reference.remember(request_id, at)
        elif action == "tick":
            clock.now += n
        assert len(join) <= size


def test_one_id_sent_again_and_again_stays_bounded() -> None:
    """A client reusing one request id: each answer counts towards the bound."""
    clock = Clock()
    join = FeedbackJoin(100, 60, clock, generation=10)
    for i in range(1000):
        join.remember("same", "m", "1", clock(), {"label": np.array([i])})
    kept = sum(len(g.outputs) for g in [join._newest, *join._closed, *join._dying])
    assert kept <= 100 + 10  # the bound, and what is left of a dropped generation
    taken = join.take("same")
    assert taken is not None and taken.outputs["label"][0] == 999
    assert join.take("same") is None


def test_truths_coming_back_fast_free_memory_too() -> None:
    """Every answer taken at once: generations still go by count, not only by age."""
    clock = Clock()
    join = FeedbackJoin(100, 86_400, clock, generation=10)
    for i in range(1000):
        join.remember(f"r{i}", "m", "1", clock(), OUT)
        assert join.take(f"r{i}") is not None
    assert len(join._closed) <= 9 and len(join) == 0
