"""Alert rules: a breached figure fires a log line, a webhook and maybe a retraining hook.

A rule fires at most once per cool-down for each model version it watches: a
breach that lasts fires again only when the cool-down has passed. Deliveries run
as owned tasks so a slow receiver never delays the next evaluation; retraining
commands run without a shell, the alert JSON on their standard input.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import orjson

from inferline.settings import AlertRule, RetrainHook
from inferline.settings.security import redact_url

__all__ = ["AlertEngine", "Reading", "flatten", "request_figures"]

logger = logging.getLogger(__name__)

#: (rule, model, version, value): one figure a rule looks at.
Reading = tuple[AlertRule, str, str, float]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class AlertEngine:
    """Decides which readings fire and delivers them; ``start``/``stop`` own its I/O."""

    def __init__(
        self,
        rules: Iterable[AlertRule],
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        self.rules = list(rules)
        self.clock = clock
        self.timeout = timeout
        self._fired: dict[tuple[str, str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drain(self) -> None:
        """Wait for the deliveries and commands under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def evaluate(self, readings: Iterable[Reading]) -> list[dict[str, Any]]:
        """Fire the breaches outside their cool-down; returns the alerts fired."""
        fired = []
        now = self.clock()
        for rule, model, version, value in readings:
            if not _OPS[rule.op](value, rule.threshold):
                continue
            key = (rule.name, model, version)
            last = self._fired.get(key)
            if last is not None and now - last < rule.cooldown_seconds:
                continue
            self._fired[key] = now
            alert = _alert(rule, model, version, value)
            logger.warning("alert %s fired: %s", rule.name, alert["message"])
            if rule.webhook:
                self._spawn(self._post(rule.webhook, alert), f"alert-{rule.name}")
            if rule.retrain is not None:
                self._spawn(self._retrain(rule.retrain, alert), f"retrain-{rule.name}")
            fired.append(alert)
        return fired

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=f"inferline-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("alert delivery %s failed", task.get_name(), exc_info=task.exception())

    async def _post(self, url: str, alert: dict[str, Any]) -> None:
        if self._client is None:
            raise RuntimeError("AlertEngine.start() has not run")
        try:
            response = await self._client.post(
                url, content=orjson.dumps(alert), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            logger.warning(
                "alert %s: webhook %s failed: %s", alert["alert"], redact_url(url, False), exc
            )
            return
        if response.is_error:
            logger.warning(
                "alert %s: webhook %s answered %d",
                alert["alert"],
                redact_url(url, False),
                response.status_code,
            )

    async def _retrain(self, hook: RetrainHook, alert: dict[str, Any]) -> None:
        payload = {**alert, "retrain": True}
        if hook.webhook is not None:
            await self._post(hook.webhook, payload)
            return
        argv = hook.command or []
        try:
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE)
        except OSError as exc:
            logger.error(
                "alert %s: retraining command %s failed to start: %s", alert["alert"], argv[0], exc
            )
            return
        try:
            await asyncio.wait_for(process.communicate(orjson.dumps(payload)), hook.timeout_seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
            logger.error(
                "alert %s: retraining command %s killed after %g s",
                alert["alert"],
                argv[0],
                hook.timeout_seconds,
            )
            return
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        log = logger.info if process.returncode == 0 else logger.error
        log(
            "alert %s: retraining command %s exited with %d",
            alert["alert"],
            argv[0],
            process.returncode,
        )


def _alert(rule: AlertRule, model: str, version: str, value: float) -> dict[str, Any]:
    window = f" over {rule.window_seconds:g} s" if rule.window_seconds else ""
    return {
        "alert": rule.name,
        "model": model,
        "version": version,
        "metric": rule.metric,
        "value": value,
        "op": rule.op,
        "threshold": rule.threshold,
        "window_seconds": rule.window_seconds,
        "fired_at": datetime.now(UTC).isoformat(),
        "message": (
            f"{model} version {version}: {rule.metric} = {value:.4g}{window}, "
            f"{rule.op} {rule.threshold:g}"
        ),
    }


def flatten(
    quality: dict[str, Any], drift: dict[str, Any], requests: dict[str, float]
) -> dict[str, float]:
    """The figures a rule may name, from the quality and drift reports and request figures."""
    flat = {f"quality.{name}": value for name, value in quality.get("metrics", {}).items()}
    if drift.get("status") == "ok":
        flat["drift.share"] = drift["share"]
        flat["drift.dataset"] = float(drift["dataset_drift"])
        flat["drift.prediction_share"] = drift["prediction_share"]
        for name, result in [*drift["predictions"].items(), *drift["features"].items()]:
            flat[f"drift.feature.{name}"] = result["score"]
    skew = drift.get("skew") or {}
    if "share" in skew:
        flat["skew.share"] = skew["share"]
    return {**flat, **requests}


def request_figures(
    requests: Sequence[tuple[float, float, bool]], now: float, since: float | None
) -> dict[str, float]:
    """Latency percentiles, error rate and rate of (arrival, latency, ok) requests."""
    rows = [r for r in requests if since is None or r[0] >= since]
    if not rows:
        return {}
    latency = np.array([r[1] for r in rows])
    span = (now - since) if since is not None else max(now - rows[0][0], 1e-9)
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    return {
        "latency.p50": float(p50),
        "latency.p95": float(p95),
        "latency.p99": float(p99),
        "latency.mean": float(latency.mean()),
        "errors.rate": float(np.mean([not r[2] for r in rows])),
        "requests.rate": len(rows) / span,
    }
