"""Every Prometheus family inferline exports, bound to a registry passed in.

Request metrics are recorded by :class:`Metrics` as an observer of the data
plane. prometheus_client takes a lock per increment (and in multiprocess mode
writes an mmap each time): a histogram observation cost 3 to 6 µs here, several
per request. So a request only adds to plain counters in a :class:`_Cell`; the
cells touched are added to the Prometheus children (one increment per bucket
that moved) at most :data:`FLUSH_SECONDS` later, and before every scrape.
Flushing once per loop turn instead cost 20-30 µs a request under load, where
a turn often holds one request: about nine locked increments per flush.

State that changes without a request (in-flight requests, queue depths, loaded
models, process CPU and memory) is sampled by a refresher task every
``metrics_refresh_seconds``, so requests pay nothing for it.

With ``--workers N`` each worker writes to ``PROMETHEUS_MULTIPROC_DIR`` and a
scrape of any worker merges all of them: counts equal the requests sent, and
histograms add up. Histograms, not summaries, so replicas aggregate too.
"""

from __future__ import annotations

import asyncio
import os
import resource
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from inferline.monitoring.records import InferenceRecord

__all__ = [
    "FLUSH_SECONDS",
    "MULTIPROC_ENV",
    "Metrics",
    "StreamMetrics",
    "mark_worker_dead",
    "multiprocess_mode",
]

#: prometheus_client's own switch for multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
#: Longest an observation waits to reach the Prometheus children. A scrape of this
#: process flushes first, so it is exact; with ``--workers N`` a scrape reads the
#: other workers' files, which lag by at most this much.
FLUSH_SECONDS = 0.05

#: (model, version) pairs and what the refresher reads from the data plane.
StateReader = Callable[[], dict[str, Any]]


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _Cell:
    """Observations of one counter or histogram child not yet added to it."""

    __slots__ = ("bounds", "buckets", "child", "count", "dirty", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        #: A histogram child's upper bounds (ending in +Inf); None for a counter.
        self.bounds: list[float] | None = None
        if not hasattr(child, "inc"):
            if not all(hasattr(child, a) for a in ("_upper_bounds", "_buckets", "_sum")):
                raise RuntimeError(
                    "this prometheus_client's histograms lack _upper_bounds/_buckets/_sum; "
                    "install a version inferline supports (see pyproject.toml)"
                )
            self.bounds = list(child._upper_bounds)
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(self.bounds) if self.bounds is not None else []
        self.dirty = False

    def flush(self) -> None:
        """One increment per bucket that moved (a counter: one for the count)."""
        child = self.child
        if self.bounds is not None:
            child._sum.inc(self.total)
            buckets = self.buckets
            for index, n in enumerate(buckets):
                if n:
                    child._buckets[index].inc(n)
                    buckets[index] = 0
        elif self.count:
            child.inc(self.count)
        self.count, self.total, self.dirty = 0, 0.0, False


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
        self.feedback_dropped = Counter(
            "inferline_feedback_dropped",
            "Answered requests not kept for their truth: the feedback store was unreachable "
            "or behind.",
            registry=registry,
        )
        self.auth_refusals = Counter(
            "inferline_auth_refused", "Requests refused for their credentials or roles.",
            ["protocol", "reason"], registry=registry,
        )  # fmt: skip
        self.rate_limits = Counter(
            "inferline_rate_limited", "Requests refused by a rate limit (429, RESOURCE_EXHAUSTED).",
            ["protocol"], registry=registry,
        )  # fmt: skip
        #: Collectors computed at scrape time (e.g. drift and quality gauges).
        self._extra: list[Any] = []
        self._request_cells: dict[tuple[str, str, str, int], tuple[_Cell, _Cell]] = {}
        self._batch_cells: dict[tuple[str, str], tuple[_Cell, _Cell, _Cell]] = {}
        self._cache_cells: dict[tuple[str, str, str], _Cell] = {}
        #: Cells with observations to add at the next flush; is one scheduled?
        self._dirty: list[_Cell] = []
        self._scheduled = False

    def add_collector(self, collector: Any) -> None:
        """A custom collector (``collect()`` yielding families) evaluated on each scrape."""
        self._extra.append(collector)
        if not multiprocess_mode():
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text format for a scrape: this process, or every worker in multiprocess mode."""
        self.flush()
        if not multiprocess_mode():
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        for collector in self._extra:
            merged.register(collector)
        return bytes(generate_latest(merged))

    # -- request path ----------------------------------------------------------------
    def observe(self, record: InferenceRecord) -> None:
        cells = self._request_cells.get(
            (record.model, record.version, record.protocol, record.status)
        )
        if cells is None:
            cells = self._new_request_cells(record)
        count, duration = cells
        # What _add does, written out: this runs for every request.
        count.count += 1
        latency = record.latency
        duration.count += 1
        duration.total += latency
        duration.buckets[bisect_left(duration.bounds, latency)] += 1  # type: ignore[arg-type]
        if not count.dirty:
            self._mark(count)
        if not duration.dirty:
            self._mark(duration)
        if record.cache is not None:
            self._add(self._cache_cell(record.cache, record.model, record.version), 1.0)

    def _new_request_cells(self, record: InferenceRecord) -> tuple[_Cell, _Cell]:
        model, version, protocol = record.model, record.version, record.protocol
        cells = (
            _Cell(self.requests.labels(model, version, protocol, str(record.status))),
            _Cell(self.duration.labels(model, version, protocol)),
        )
        self._request_cells[(model, version, protocol, record.status)] = cells
        return cells

    def auth_refused(self, protocol: str, reason: str) -> None:
        """A request refused as ``unauthenticated`` or ``forbidden`` (rare: counted at once)."""
        self.auth_refusals.labels(protocol, reason).inc()

    def rate_limited(self, protocol: str) -> None:
        self.rate_limits.labels(protocol).inc()

    def cache_evicted(self, model: str, version: str) -> None:
        self._add(self._cache_cell("evicted", model, version), 1.0)

    def observe_batch(
        self, model: str, version: str, rows: int, compute: float, waits: list[float]
    ) -> None:
        """One model call: its rows, how long it took, how long each request queued."""
        key = (model, version)
        cells = self._batch_cells.get(key)
        if cells is None:
            cells = self._batch_cells[key] = (
                _Cell(self.batch_size.labels(model, version)),
                _Cell(self.compute.labels(model, version)),
                _Cell(self.queue_wait.labels(model, version)),
            )
        self._add(cells[0], rows)
        self._add(cells[1], compute)
        for wait in waits:
            self._add(cells[2], wait)

    def flush(self) -> None:
        """Add what was observed since the last flush to the Prometheus children."""
        dirty, self._dirty, self._scheduled = self._dirty, [], False
        for cell in dirty:
            cell.flush()

    def _add(self, cell: _Cell, value: float) -> None:
        cell.count += 1
        cell.total += value
        if cell.bounds is not None:
            cell.buckets[bisect_left(cell.bounds, value)] += 1
        if not cell.dirty:
            self._mark(cell)

    def _mark(self, cell: _Cell) -> None:
        cell.dirty = True
        self._dirty.append(cell)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a batch job, a test): add it now
            self.flush()
            return
        self._scheduled = True
        loop.call_later(FLUSH_SECONDS, self.flush)

    def _cache_cell(self, outcome: str, model: str, version: str) -> _Cell:
        key = (outcome, model, version)
        cell = self._cache_cells.get(key)
        if cell is None:
            family = {
                "hit": self.cache_hits, "miss": self.cache_misses, "evicted": self.cache_evictions
            }[outcome]  # fmt: skip
            cell = self._cache_cells[key] = _Cell(family.labels(model, version))
        return cell

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


class StreamMetrics:
    """A stream consumer's families (``inferline stream``): one batch is one update each.

    Messages per second is ``rate(inferline_stream_messages_total[1m])``; lag and
    pending are sampled from the broker every ``metrics_refresh_seconds``.
    """

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.registry = registry
        self.model = model
        self.messages = Counter(
            "inferline_stream_messages", "Messages settled, by outcome (scored, dead, retried).",
            ["model", "outcome"], registry=registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "inferline_stream_dead_letters", "Messages sent to the dead letter, by reason.",
            ["model", "reason"], registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "inferline_stream_errors", "Batches that failed to score or settle, by stage.",
            ["model", "stage"], registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inferline_stream_batch_size", "Messages per batch read.",
            ["model"], buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "inferline_stream_latency_seconds", "From the message's production to its settling.",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "inferline_stream_lag", "Messages in the source not yet read by the group.",
            ["model"], registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.pending = Gauge(
            "inferline_stream_pending", "Messages read by the group and not yet acknowledged.",
            ["model"], registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.inflight = Gauge(
            "inferline_stream_inflight_batches", "Batches read by this consumer, not yet settled.",
            ["model"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip

    def settled(
        self, size: int, scored: int, dead: dict[str, int], retried: int, latencies: list[float]
    ) -> None:
        model = self.model
        self.batch_size.labels(model).observe(size)
        if scored:
            self.messages.labels(model, "scored").inc(scored)
        if retried:
            self.messages.labels(model, "retried").inc(retried)
        for reason, n in dead.items():
            self.messages.labels(model, "dead").inc(n)
            self.dead_letters.labels(model, reason).inc(n)
        latency = self.latency.labels(model)
        for seconds in latencies:
            latency.observe(seconds)

    def failed(self, stage: str) -> None:
        self.errors.labels(self.model, stage).inc()

    def backlog(self, lag: int | None, pending: int | None) -> None:
        if lag is not None:
            self.lag.labels(self.model).set(lag)
        if pending is not None:
            self.pending.labels(self.model).set(pending)


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
