"""Every Prometheus family inferline exports, bound to a registry passed in.

Request metrics are recorded by :class:`Metrics` as an observer of the data
plane (counters and histograms, cached label children: about a microsecond per
request). State that changes without a request (in-flight requests, queue
depths, loaded models, process CPU and memory) is sampled by a refresher task
every ``metrics_refresh_seconds``, so requests pay nothing for it.

With ``--workers N`` each worker writes to ``PROMETHEUS_MULTIPROC_DIR`` and a
scrape of any worker merges all of them: counts equal the requests sent, and
histograms add up. Histograms, not summaries, so replicas aggregate too.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from inferline.monitoring.records import InferenceRecord

__all__ = ["MULTIPROC_ENV", "Metrics", "mark_worker_dead", "multiprocess_mode"]

#: prometheus_client's own switch for multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

#: (model, version) pairs and what the refresher reads from the data plane.
StateReader = Callable[[], dict[str, Any]]


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """Request, batch, model and process metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "inferline_requests", "Inference requests by outcome.",
            ["model", "version", "protocol", "status"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "inferline_request_duration_seconds", "End-to-end inference latency in the server.",
            ["model", "version", "protocol"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "inferline_queue_wait_seconds", "Time a request waited for its batch.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.compute = Histogram(
            "inferline_compute_seconds", "Time the model took per call (one batch).",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inferline_batch_size", "Rows per model call.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "inferline_inflight_requests", "Requests being answered.",
            ["model"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = Gauge(
            "inferline_queue_depth", "Requests waiting in a batching queue.",
            ["model", "version"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.models_loaded = Gauge(
            "inferline_models_loaded",
            "Model versions loaded.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cpu = Gauge(
            "inferline_process_cpu_seconds", "CPU time used by the server processes.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.memory = Gauge(
            "inferline_process_resident_memory_bytes", "Resident memory of the server processes.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.cache_hits = Counter(
            "inferline_cache_hits",
            "Prediction cache hits.",
            ["model", "version"],
            registry=registry,
        )
        self.cache_evictions = Counter(
            "inferline_cache_evictions", "Prediction cache entries evicted for room.",
            ["model", "version"], registry=registry,
        )  # fmt: skip
        self.cache_misses = Counter(
            "inferline_cache_misses", "Prediction cache misses.", ["model", "version"],
            registry=registry,
        )  # fmt: skip
        #: Collectors computed at scrape time (e.g. drift and quality gauges).
        self._extra: list[Any] = []
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._batch_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def add_collector(self, collector: Any) -> None:
        """A custom collector (``collect()`` yielding families) evaluated on each scrape."""
        self._extra.append(collector)
        if not multiprocess_mode():
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text format for a scrape: this process, or every worker in multiprocess mode."""
        if not multiprocess_mode():
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        for collector in self._extra:
            merged.register(collector)
        return bytes(generate_latest(merged))

    # -- request path ----------------------------------------------------------------
    def observe(self, record: InferenceRecord) -> None:
        key = (record.model, record.version, record.protocol, record.status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(
                    record.model, record.version, record.protocol, str(record.status)
                ),
                self.duration.labels(record.model, record.version, record.protocol),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(record.latency)
        if record.cache is not None:
            family = self.cache_hits if record.cache == "hit" else self.cache_misses
            family.labels(record.model, record.version).inc()

    def cache_evicted(self, model: str, version: str) -> None:
        self.cache_evictions.labels(model, version).inc()

    def observe_batch(
        self, model: str, version: str, rows: int, compute: float, waits: list[float]
    ) -> None:
        """One model call: its rows, how long it took, how long each request queued."""
        key = (model, version)
        children = self._batch_children.get(key)
        if children is None:
            children = (
                self.batch_size.labels(model, version),
                self.compute.labels(model, version),
                self.queue_wait.labels(model, version),
            )
            self._batch_children[key] = children
        children[0].observe(rows)
        children[1].observe(compute)
        for wait in waits:
            children[2].observe(wait)

    # -- sampled state ---------------------------------------------------------------
    def refresh(self, state: dict[str, Any]) -> None:
        """Set the gauges from a snapshot of the data plane (see ``DataPlane.snapshot``)."""
        self.models_loaded.set(state["models_loaded"])
        for model, count in state["inflight"].items():
            self.inflight.labels(model).set(count)
        for (model, version), depth in state["queue_depth"].items():
            self.queue_depth.labels(model, version).set(depth)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu.set(usage.ru_utime + usage.ru_stime)
        self.memory.set(_resident_bytes())

    async def run_refresher(self, read_state: StateReader, every: float) -> None:
        """Sample gauges until cancelled (owned and cancelled by the server lifespan)."""
        while True:
            self.refresh(read_state())
            await asyncio.sleep(every)


def _resident_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay counted)."""
    if multiprocess_mode():
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
