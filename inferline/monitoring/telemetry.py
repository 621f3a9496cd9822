"""The observers a server runs, built from settings: metrics, request log, payload log.

:class:`Observers` is the one wiring point between the data plane and whatever
watches it: the data plane takes it when it is built and never changes it, so
every model it ever serves reports to the same observers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from inferline.errors import InferlineError
from inferline.monitoring.logs import RequestLog
from inferline.monitoring.metrics import Metrics
from inferline.monitoring.payloads import FileSink, PayloadLogger, PostgresSink, RedisSink, Sink
from inferline.monitoring.records import Observer
from inferline.settings import PayloadLogSettings, Settings

__all__ = ["BatchHook", "EvictionHook", "Observers", "Telemetry"]

#: Told about every model call: (model, version, rows, compute s, each request's queue wait).
BatchHook = Callable[[str, str, int, float, list[float]], None]
#: Told when an in-process prediction cache evicts an entry: (model, version).
EvictionHook = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Observers:
    """Everything the data plane reports to, given to it when it is built."""

    #: Told about every request after it is answered (metrics, logs, drift, ...).
    requests: tuple[Observer, ...] = ()
    #: Told about every model call.
    batches: BatchHook | None = None
    #: Told about every eviction from an in-process prediction cache.
    cache_evictions: EvictionHook | None = None


class _Plane(Protocol):
    """What telemetry needs of the data plane (which sits above this layer)."""

    def resolve(self, name: str, version: str | None) -> Any: ...
    def snapshot(self) -> dict[str, Any]: ...


class Telemetry:
    """Builds the observers once (no I/O) and owns their background tasks."""

    def __init__(self, settings: Settings) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.settings = settings
        self.metrics = Metrics(CollectorRegistry()) if settings.metrics else None
        self.request_log = (
            RequestLog(settings.request_log) if settings.request_log != "off" else None
        )
        self.payloads: PayloadLogger | None = None
        self._refresher: asyncio.Task[None] | None = None
        if settings.payload_log != "off":
            self.payloads = PayloadLogger(
                _sink(settings), self._payload_config, settings.payload_log_queue
            )
            if self.metrics is not None:
                dropped = Counter(
                    "inferline_payload_records_dropped",
                    "Payload records dropped because the log queue was full or the sink failed.",
                    registry=self.metrics.registry,
                )
                self.payloads.on_drop = dropped.inc
        self._plane: _Plane | None = None

    def observers(self, *others: Observer) -> Observers:
        """What to build the data plane with: these observers, then ``others``."""
        requests: Iterable[Observer | None] = (self.metrics, self.request_log, self.payloads)
        metrics = self.metrics
        return Observers(
            requests=(*(o for o in requests if o is not None), *others),
            batches=metrics.observe_batch if metrics is not None else None,
            cache_evictions=metrics.cache_evicted if metrics is not None else None,
        )

    async def start(self, plane: _Plane) -> None:
        """Start the background work: the payload writer and the gauges read from ``plane``."""
        self._plane = plane
        if self.payloads is not None:
            await self.payloads.start()
        if self.metrics is not None:
            self._refresher = asyncio.create_task(
                self.metrics.run_refresher(plane.snapshot, self.settings.metrics_refresh_seconds),
                name="inferline-metrics-refresher",
            )

    async def stop(self) -> None:
        # What waits for its linger goes out now: the last requests' lines and counts.
        if self.request_log is not None:
            self.request_log.flush()
        if self.metrics is not None:
            self.metrics.flush()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self.payloads is not None:
            await self.payloads.stop()

    def _payload_config(self, model: str, version: str) -> PayloadLogSettings:
        if self._plane is None:
            return PayloadLogSettings()
        try:
            config: PayloadLogSettings = self._plane.resolve(
                model, version
            ).model.settings.payload_log
        except InferlineError:  # a version unloaded since: record it with the defaults
            return PayloadLogSettings()
        return config


def _sink(settings: Settings) -> Sink:
    kind = settings.payload_log
    if kind == "file":
        folder = settings.payload_log_dir or settings.home / "payloads"
        return FileSink(folder, settings.payload_log_max_bytes, settings.payload_log_backups)
    if not settings.payload_log_url:
        raise ValueError(f"payload_log={kind} needs payload_log_url")
    url = settings.payload_log_url.get_secret_value()
    return RedisSink(url) if kind == "redis" else PostgresSink(url)
