"""The Monitor: one observer that feeds drift, skew, quality, alerts and their gauges.

``observe`` runs on the event loop for every answered request and only appends
to bounded deques. Statistics run later: on demand for the API, and every
``interval_seconds`` in the monitor's own task (in a thread), which refreshes
the figures the Prometheus gauges read and evaluates the alert rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferline.errors import BadRequest, NotFound, Unavailable
from inferline.monitoring.alerts import AlertEngine, Reading, flatten, request_figures
from inferline.monitoring.drift import compare
from inferline.monitoring.feedback_join import Pending
from inferline.monitoring.feedback_store import FeedbackStore, Joined, open_store
from inferline.monitoring.quality import match_truth, window_report
from inferline.monitoring.records import InferenceRecord
from inferline.monitoring.skew import ServedRows, SkewBlocks, columns, skew_report
from inferline.registry.store import Registry
from inferline.settings import ModelMonitoring, MonitoringSettings

__all__ = ["Monitor", "folder_profiles", "registry_profiles"]

logger = logging.getLogger(__name__)

#: Reference profile of a model version (may block: it runs in a thread); None if none.
ProfileLookup = Callable[[str, str], dict[str, Any] | None]
#: A version's ``monitoring`` model settings (cheap: it runs on the event loop).
HintLookup = Callable[[str, str], ModelMonitoring | None]
PROFILE_FILE = "reference-profile.json"


@dataclass(slots=True)
class _Version:
    served: ServedRows
    skew: SkewBlocks
    #: (arrival, latency seconds, answered 200)
    requests: deque[tuple[float, float, bool]] = field(default_factory=deque)


class Monitor:
    """Observes every request; answers quality, drift and skew per model version."""

    def __init__(
        self,
        settings: MonitoringSettings,
        profile_for: ProfileLookup | None = None,
        hint_for: HintLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.profile_for = profile_for
        self.hint_for = hint_for
        self.clock = clock
        #: Answered requests waiting for their truth, and the joined pairs: in the process,
        #: or in Redis shared by workers and replicas (``quality.store_url``).
        self.store: FeedbackStore = open_store(settings.quality, clock)
        #: Versions with a window in the store, as of the last refresh (other workers' too).
        self._stored: set[tuple[str, str]] = set()
        self.alerts = AlertEngine(settings.alerts)
        #: Figures from the last refresh, per (model, version): what the gauges read.
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self._versions: dict[tuple[str, str], _Version] = {}
        #: Found profiles, kept; a miss, with when it was looked up (retried after a round).
        self._profiles: dict[tuple[str, str], dict[str, Any]] = {}
        self._missing: dict[tuple[str, str], float] = {}
        self._skew_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    # -- the request path: look and enqueue ----------------------------------------------
    def observe(self, record: InferenceRecord) -> None:
        if not record.version:
            return  # refused before a version was chosen: nothing to attribute
        state = self._state(record.model, record.version)
        ok = record.status == 200 and record.outputs is not None
        state.requests.append((record.started, record.latency, ok))
        if ok and record.outputs is not None:
            state.served.add(record.started, record.inputs, record.outputs)
            state.skew.add(record.started, record.inputs, record.outputs)
            self.store.remember(
                record.request_id, record.model, record.version, record.started, record.outputs
            )

    def _state(self, model: str, version: str) -> _Version:
        state = self._versions.get((model, version))
        if state is None:
            drift = self.settings.drift
            state = _Version(
                ServedRows(drift.window_rows),
                SkewBlocks(drift.skew_rows),
                deque(maxlen=self.settings.request_window),
            )
            self._versions[(model, version)] = state
        return state

    # -- ground truth --------------------------------------------------------------------
    async def feedback(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        """Join truths to answered requests: counts accepted, lists unknown and refused ids.

        Raises :class:`Unavailable` when a shared store cannot be reached: the truths
        may be sent again.
        """
        found = await self.store.take([request_id for request_id, _ in items])
        unknown, rejected = [], []
        joined: list[Joined] = []
        refused: list[tuple[str, Pending]] = []
        for (request_id, truth), pending in zip(items, found, strict=True):
            if pending is None:
                unknown.append(request_id)
                continue
            hint = self.hint_for(pending.model, pending.version) if self.hint_for else None
            try:
                reading, values = match_truth(pending, truth, hint)
            except BadRequest as exc:
                refused.append((request_id, pending))  # may be sent again, corrected
                rejected.append({"request_id": request_id, "error": exc.message})
                continue
            joined.append((pending, reading, values))
        if refused:
            await self.store.put_back(refused)
        if joined:
            await self.store.add(self.clock(), joined)
        return {"accepted": len(joined), "unknown": unknown, "rejected": rejected}

    # -- reports (call from a thread: they may take a while) ------------------------------
    def versions(self, model: str) -> list[str]:
        """Versions seen here, or with pairs in the store at the last refresh."""
        seen = {v for m, v in [*list(self._versions), *self._stored] if m == model}
        return sorted(seen)

    def quality_report(
        self, model: str, version: str, since: float | None = None
    ) -> dict[str, Any]:
        """Figures over the version's window (shared by workers with a Redis store)."""
        task, rows = self.store.window(model, version)
        return {"model": model, "version": version, **window_report(task, rows, since)}

    def drift_report(self, model: str, version: str, since: float | None = None) -> dict[str, Any]:
        state = self._versions.get((model, version))
        profile = self.profile(model, version)
        report: dict[str, Any] = {"model": model, "version": version, "reference": bool(profile)}
        if state is None or profile is None:
            report["status"] = "no reference profile" if profile is None else "no traffic yet"
            return report
        settings = self.settings.drift
        names = list(profile.get("features", {}))
        served, predicted = columns(state.served.snapshot(since), names, settings.window_rows)
        rows = max((len(v) for v in [*served.values(), *predicted.values()]), default=0)
        report["rows"] = rows
        report["skew"] = self._skew(model, version, state, profile)
        if rows < settings.min_rows:
            report["status"] = f"waiting for rows: {rows} of {settings.min_rows}"
            return report
        inputs = compare(profile.get("features", {}), served, settings, profile.get("rows"))
        outputs = compare(profile.get("predictions", {}), predicted, settings, profile.get("rows"))
        report.update(
            status="ok",
            features=inputs["columns"],
            drifted=inputs["drifted"],
            share=inputs["share"],
            dataset_drift=bool(inputs["columns"]) and inputs["share"] >= settings.drift_share,
            predictions=outputs["columns"],
            prediction_drifted=outputs["drifted"],
            prediction_share=outputs["share"],
        )
        return report

    def _skew(
        self, model: str, version: str, state: _Version, profile: dict[str, Any]
    ) -> dict[str, Any]:
        """The latest judged block's verdict (judging the blocks filled since, first)."""
        skew = state.skew
        with self._skew_lock:
            for _ in range(2):  # the first block if never judged, then the newest
                taken = skew.take()
                if taken is None:
                    break
                number, block = taken
                was = skew.report
                report = skew_report(profile, block, skew.needed, self.settings.drift)
                report["block"] = number
                skew.report = report
                if skew.first is None:
                    skew.first = {k: report[k] for k in ("block", "rows", "skewed", "features")}
                if report["skewed"] and not (was and was["skewed"]):
                    logger.warning(
                        "training/serving skew: %s version %s, block %d (%d rows) differs on %s",
                        model,
                        version,
                        number,
                        report["rows"],
                        ", ".join(report["features"]),
                    )
                elif was and was["skewed"] and not report["skewed"]:
                    logger.info(
                        "training/serving skew cleared: %s version %s, block %d is clean",
                        model,
                        version,
                        number,
                    )
            if skew.report is None:
                return {"status": f"waiting for rows: {skew.rows} of {skew.needed}"}
            return {**skew.report, "first": skew.first}

    def profile(self, model: str, version: str) -> dict[str, Any] | None:
        """The version's reference profile; a missing one is looked up again each round,
        so a profile written while the version serves (``inferline monitor profile``)
        is picked up."""
        key = (model, version)
        found = self._profiles.get(key)
        if found is not None or self.profile_for is None:
            return found
        now = self.clock()
        last = self._missing.get(key)
        if last is not None and now - last < self.settings.interval_seconds:
            return None
        found = self.profile_for(model, version)
        if found is None:
            self._missing[key] = now
            return None
        self._missing.pop(key, None)
        self._profiles[key] = found
        return found

    def figures(
        self, model: str, version: str, since: float | None = None, quality: bool = True
    ) -> dict[str, float]:
        """Every figure an alert rule may name, flat (``quality.f1``, ``drift.share``, ...).

        Without ``quality`` (or while its shared store is unreachable) no ``quality.*``.
        """
        return flatten(
            (self._quality(model, version, since) if quality else None) or {},
            self.drift_report(model, version, since),
            self._requests(model, version, since),
        )

    def _quality(self, model: str, version: str, since: float | None) -> dict[str, Any] | None:
        """The quality report; None while a shared store is unreachable."""
        try:
            return self.quality_report(model, version, since)
        except Unavailable:
            return None

    def _requests(self, model: str, version: str, since: float | None) -> dict[str, float]:
        state = self._versions.get((model, version))
        return request_figures(state.requests.copy() if state else [], self.clock(), since)

    def refresh(self) -> list[Reading]:
        """Recompute every version's figures (for the gauges) and the rules' readings.

        While a shared store is unreachable its gauges keep their last figures, and
        rules on quality see none.
        """
        readings: list[Reading] = []
        try:
            self._stored = self.store.versions()
            reachable = True
        except Unavailable as exc:
            logger.warning("quality figures not refreshed: %s", exc.message)
            reachable = False  # no call per version to find it out again
        for model, version in sorted({*list(self._versions), *self._stored}):
            quality = self._quality(model, version, None) if reachable else None
            drift = self.drift_report(model, version)
            last = self.latest.get((model, version), {}).get("quality", {"pairs": 0})
            self.latest[(model, version)] = {"quality": quality or last, "drift": drift}
            flat: dict[float | None, dict[str, float]] = {
                None: flatten(quality or {}, drift, self._requests(model, version, None))
            }
            for rule in self.alerts.rules:
                if rule.model not in (None, model) or rule.version not in (None, version):
                    continue
                window = rule.window_seconds
                if window not in flat:
                    since = self.clock() - (window or 0)
                    flat[window] = self.figures(model, version, since, quality=reachable)
                value = flat[window].get(rule.metric)
                if value is not None:
                    readings.append((rule, model, version, value))
        return readings

    # -- the monitor's task ----------------------------------------------------------------
    async def start(self) -> None:
        await self.store.start()
        await self.alerts.start()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="inferline-monitor")

    async def stop(self) -> None:
        if self._task is not None and self._stopping is not None:
            self._stopping.set()
            await asyncio.wait([self._task])
            self._task = None
        await self.alerts.stop()
        await self.store.stop()

    async def tick(self) -> list[dict[str, Any]]:
        """One round: refresh figures in a thread, then fire what the rules say."""
        return self.alerts.evaluate(await asyncio.to_thread(self.refresh))

    async def _run(self) -> None:
        if self._stopping is None:  # pragma: no cover - start() sets it
            return
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.settings.interval_seconds)
                return
            except TimeoutError:
                pass
            try:
                await self.tick()
            except Exception:  # a bad round must not end monitoring; the next may succeed
                logger.exception("monitoring round failed")


def folder_profiles(model_dir: Path) -> ProfileLookup:
    """Model-folder mode: ``<model_dir>/<model>/<version>/reference-profile.json``, if any."""

    def lookup(model: str, version: str) -> dict[str, Any] | None:
        path = model_dir / model / version / PROFILE_FILE
        try:
            profile = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring %s: %s", path, exc)
            return None
        return profile if isinstance(profile, dict) else None

    return lookup


def registry_profiles(registry: Registry) -> ProfileLookup:
    """Registry mode: the profile stored with the version at registration, if any."""

    def lookup(model: str, version: str) -> dict[str, Any] | None:
        if not version.isdigit():
            return None
        try:
            return registry.get(model, int(version)).profile
        except NotFound:
            return None  # deleted since it served

    return lookup
