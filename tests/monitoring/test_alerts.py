"""Alert rules against a real webhook receiver on loopback; retraining hooks run."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from inferline.monitoring.alerts import AlertEngine
from inferline.monitoring.monitor import Monitor
from inferline.monitoring.records import InferenceRecord
from inferline.settings import AlertRule, MonitoringSettings, RetrainHook


class Receiver:
    """A tiny HTTP/1.1 server: records each POST's path and JSON body, answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        self.received.append((path, json.loads(await reader.readexactly(length))))
        self.arrived.set()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    server = await asyncio.start_server(hooks._handle, "127.0.0.1", 0)
    hooks.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield hooks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_one_alert_per_breach_per_cooldown(receiver: Receiver) -> None:
    rule = AlertRule(
        name="f1-drop",
        metric="quality.f1",
        op="<",
        threshold=0.8,
        cooldown_seconds=60,
        webhook=f"{receiver.url}/hooks/alerts",
    )
    clock = Clock()
    engine = AlertEngine([rule], clock=clock)
    await engine.start()
    try:
        fired = []
        for second in range(10):  # breached at every evaluation for 10 s
            clock.now = float(second)
            fired += engine.evaluate([(rule, "fraud", "1", 0.6)])
        clock.now = 30.0
        fired += engine.evaluate([(rule, "fraud", "1", 0.9)])  # recovered
        clock.now = 40.0
        fired += engine.evaluate([(rule, "fraud", "1", 0.5)])  # breached again, cooling down
        await engine.drain()
        assert len(receiver.received) == len(fired) == 1
        path, alert = receiver.received[0]
        assert path == "/hooks/alerts"
        assert alert["alert"] == "f1-drop" and alert["model"] == "fraud" and alert["version"] == "1"
        assert alert["metric"] == "quality.f1" and alert["value"] == 0.6
        assert alert["op"] == "<" and alert["threshold"] == 0.8

        clock.now = 60.0  # the cool-down is over and the breach lasts: once more
        fired = engine.evaluate([(rule, "fraud", "1", 0.5), (rule, "fraud", "2", 0.7)])
        fired += engine.evaluate([(rule, "fraud", "1", 0.5), (rule, "fraud", "2", 0.7)])
        await engine.drain()
        assert [(a["version"], a["value"]) for a in fired] == [("1", 0.5), ("2", 0.7)]
        assert len(receiver.received) == 3
    finally:
        await engine.stop()


async def test_retraining_command_and_webhook_run(receiver: Receiver, tmp_path: Path) -> None:
    out = tmp_path / "ran.json"
    script = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    by_command = AlertRule(
        name="retrain-cmd",
        metric="drift.share",
        op=">=",
        threshold=0.5,
        retrain=RetrainHook(command=[sys.executable, "-c", script, str(out)]),
    )
    by_webhook = AlertRule(
        name="retrain-hook",
        metric="drift.share",
        op=">=",
        threshold=0.5,
        retrain=RetrainHook(webhook=f"{receiver.url}/retrain"),
    )
    engine = AlertEngine([by_command, by_webhook])
    await engine.start()
    try:
        engine.evaluate([(by_command, "fraud", "3", 0.75), (by_webhook, "fraud", "3", 0.75)])
        await engine.drain()
    finally:
        await engine.stop()
    sent = json.loads(out.read_text())
    assert sent["retrain"] is True and sent["alert"] == "retrain-cmd" and sent["value"] == 0.75
    assert [(p, a["alert"], a["retrain"]) for p, a in receiver.received] == [
        ("/retrain", "retrain-hook", True)
    ]


def test_a_retrain_hook_names_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RetrainHook(webhook="http://x", command=["true"])
    with pytest.raises(ValueError, match="exactly one"):
        RetrainHook()


def served(monitor: Monitor, at: float, latency: float, label: int, request_id: str) -> None:
    monitor.observe(
        InferenceRecord(
            request_id,
            "fraud",
            "1",
            "rest",
            at,
            latency,
            200,
            {"input": np.zeros((1, 2), np.float32)},
            {"label": np.array([label])},
        )
    )


async def test_the_monitor_task_fires_from_served_traffic(receiver: Receiver) -> None:
    now = Clock()
    rules = [
        AlertRule(
            name="accuracy",
            metric="quality.accuracy",
            op="<",
            threshold=0.8,
            webhook=f"{receiver.url}/accuracy",
        ),
        AlertRule(  # slow requests long ago, fast ones lately: quiet over the last 10 s
            name="slow-recently",
            metric="latency.p99",
            threshold=0.5,
            window_seconds=10,
            webhook=f"{receiver.url}/slow-recently",
        ),
        AlertRule(name="slow", metric="latency.p99", threshold=0.5, webhook=f"{receiver.url}/slow"),
    ]
    monitor = Monitor(MonitoringSettings(interval_seconds=0.02, alerts=rules), clock=now)
    for i in range(4):
        served(monitor, float(i), 1.0, 1, f"old-{i}")
    for i in range(6):
        served(monitor, 100.0 + i, 0.01, 1, f"new-{i}")
    now.now = 106.0
    answer = await monitor.feedback([(f"new-{i}", i % 2) for i in range(6)])  # half wrong
    assert answer["accepted"] == 6
    await monitor.start()
    try:
        await asyncio.wait_for(_until(receiver, 2), 10)
        for _ in range(3):  # more rounds, still breached: the cool-down holds them back
            await monitor.tick()
        await monitor.alerts.drain()
    finally:
        await monitor.stop()
    assert sorted(path for path, _ in receiver.received) == ["/accuracy", "/slow"]
    accuracy = dict(receiver.received)["/accuracy"]
    assert accuracy["value"] == 0.5 and accuracy["model"] == "fraud"


async def _until(receiver: Receiver, count: int) -> None:
    while len(receiver.received) < count:
        receiver.arrived.clear()
        await receiver.arrived.wait()


async def test_an_unreachable_webhook_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule = AlertRule(name="x", metric="errors.rate", threshold=0.1, webhook="http://127.0.0.1:9/")
    engine = AlertEngine([rule])
    await engine.start()
    with caplog.at_level(logging.WARNING, logger="inferline.monitoring.alerts"):
        engine.evaluate([(rule, "fraud", "1", 0.5)])
        await engine.drain()
    await engine.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("alert x fired" in m for m in messages)
    assert any("webhook http://127.0.0.1:9/ failed" in m for m in messages)


# -- rules name figures that exist --------------------------------------------------------
def test_a_rule_naming_an_unknown_metric_is_refused_when_the_rules_load() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        AlertRule(name="f1-drop", metric="quality.f1score", op="<", threshold=0.8)
    message = str(refused.value)
    assert "alert rule 'f1-drop' names unknown metric 'quality.f1score'" in message
    assert "known metrics: quality.accuracy" in message and "drift.feature.<column>" in message
    for bad in ("drift.feature.", "latency.p90", "drift"):
        with pytest.raises(ValidationError, match="unknown metric"):
            AlertRule(name="x", metric=bad, threshold=1)
    assert AlertRule(name="x", metric="drift.feature.amount", threshold=0.1)


def test_every_figure_the_monitor_computes_is_a_known_metric() -> None:
    from inferline.monitoring.alerts import flatten, request_figures
    from inferline.settings import ALERT_METRICS

    quality = {"metrics": dict.fromkeys(["accuracy", "precision", "recall", "f1", "roc_auc"], 1.0)}
    quality["metrics"].update(dict.fromkeys(["mae", "rmse", "r2"], 1.0))
    column = {"score": 0.1}
    drift = {
        "status": "ok",
        "share": 0.0,
        "dataset_drift": False,
        "prediction_share": 0.0,
        "features": {"amount": column},
        "predictions": {},
        "skew": {"share": 0.0},
    }
    figures = flatten(quality, drift, request_figures([(0.0, 0.1, True)], 1.0, None))
    assert set(figures) == {*ALERT_METRICS, "drift.feature.amount"}


def test_the_cli_refuses_an_unknown_metric_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from inferline.cli.main import app

    config = tmp_path / "settings.yaml"
    config.write_text(
        "monitoring:\n  alerts:\n    - {name: slow, metric: latency.p90, threshold: 0.25}\n"
    )
    # A missing model folder too: were the rule accepted, serve would stop there, not serve.
    missing = str(tmp_path / "no-models")
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--model-dir", missing])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert re.match(
        r"inferline: (invalid settings: )?monitoring\.alerts\.0: "
        r"alert rule 'slow' names unknown metric 'latency\.p90'; known metrics: quality\.",
        lines[0],
    ), lines[0]
