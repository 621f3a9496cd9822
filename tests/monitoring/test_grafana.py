"""The Grafana dashboard queries only metric names the server really exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.monitoring.metrics import Metrics
from inferline.monitoring.monitor import Monitor
from inferline.monitoring.records import InferenceRecord
from inferline.monitoring.report import MonitorCollector
from inferline.registry.profile import profile_columns
from inferline.settings import DriftSettings, MonitoringSettings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "inferline.json"


def exported_names() -> set[str]:
    """Every sample name a scrape shows after some traffic, feedback and a refresh."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 2))
    profile = {
        "rows": 300,
        "features": profile_columns({"a": reference[:, 0], "b": reference[:, 1]}),
        "predictions": profile_columns({"label": (reference[:, 0] > 0).astype(np.int64)}),
    }
    settings = MonitoringSettings(drift=DriftSettings(min_rows=10, skew_rows=10))
    monitor = Monitor(settings, lambda model, version: profile)
    for i in range(5):
        rows = rng.normal(size=(4, 2))
        record = InferenceRecord(
            f"r{i}", "fraud", "1", "rest", time.time(), 0.01, 200, {"input": rows},
            {"label": (rows[:, 0] > 0).astype(np.int64)},
        )  # fmt: skip
        metrics.observe(record)
        monitor.observe(record)
    metrics.observe_batch("fraud", "1", 4, 0.01, [0.001])
    metrics.refresh(
        {"models_loaded": 1, "inflight": {"fraud": 0}, "queue_depth": {("fraud", "1"): 0}}
    )
    assert asyncio.run(monitor.feedback([("r0", [1, 0, 1, 0])]))["accepted"] == 1
    monitor.refresh()
    registry.register(MonitorCollector(monitor))
    text = generate_latest(registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    expressions = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\binferline_[a-z0-9_]+", target["expr"]))
            assert used and used <= names, (panel["title"], used - names)
            expressions.append(target["expr"])
    everything = "\n".join(expressions)
    for wanted in (
        "rate(inferline_requests_total",  # throughput
        "histogram_quantile(0.5, sum by (le, model) (rate(inferline_request_duration",
        "histogram_quantile(0.95, sum by (le, model) (rate(inferline_request_duration",
        "histogram_quantile(0.99, sum by (le, model) (rate(inferline_request_duration",
        'status!="200"',  # errors
        "inferline_batch_size_bucket",
        "inferline_feature_drift{",
        "inferline_model_quality",
        "inferline_training_serving_skew",
    ):
        assert wanted in everything, wanted


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24 and not cells & taken, panel["title"]
        taken |= cells
