"""Payload logging: requests and responses (errors too), recorded off the request path.

``observe`` costs a sampling draw and a list append; when ``queue_size`` records
are already waiting the record is dropped and counted, never waited for. An
owned writer task wakes when records arrive, lets a batch gather for
``linger`` seconds, then serialises it in a thread and writes it to a sink
(rotating JSON-lines files, a Redis Stream or a PostgreSQL table). Waking once
per batch, not per record, is what keeps logging every request cheap: a thread
hand-off costs more than encoding a record. ``stop()`` writes what is still
waiting before returning.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from inferline.monitoring.records import InferenceRecord, iso_utc
from inferline.settings import PayloadLogSettings

__all__ = ["FileSink", "PayloadLogger", "PostgresSink", "RedisSink", "Sink", "encode_record"]

logger = logging.getLogger(__name__)

#: Records per sink write.
BATCH = 1024
REDACTED = "[redacted]"

#: Per model and version: its payload-log settings (sampling, redaction).
ConfigFor = Callable[[str, str], PayloadLogSettings]


class Sink(Protocol):
    async def write(self, lines: list[bytes]) -> None: ...
    async def close(self) -> None: ...


def _plain(array: np.ndarray[Any, Any]) -> Any:
    """Values orjson always takes (the slow path: redaction, text, odd layouts)."""
    if array.dtype.kind in "OSU":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()
        ]
    return array.tolist()


def encode_record(record: InferenceRecord, redact: frozenset[str]) -> bytes:
    """One JSON line; redacted inputs and outputs keep their name, not their values.

    Numeric tensors go to orjson as they are (it writes numpy arrays natively);
    only redaction, text and object arrays take the slower, converting path.
    """
    doc = {
        "request_id": record.request_id,
        "model": record.model,
        "version": record.version,
        "protocol": record.protocol,
        "timestamp": iso_utc(record.started),
        "latency_ms": int(record.latency * 1_000_000 + 0.5) / 1000,
        "status": record.status,
        "inputs": record.inputs,
        "outputs": record.outputs,
        "error": record.error,
    }
    if not redact:
        try:
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # JSONEncodeError: text/object arrays, a non-dict mapping
            pass
    doc["inputs"] = _tensors(record.inputs, redact)
    doc["outputs"] = _tensors(record.outputs, redact)
    return orjson.dumps(doc)


def _tensors(values: Any, redact: frozenset[str]) -> Any:
    if values is None:
        return None
    return {k: REDACTED if k in redact else _plain(v) for k, v in values.items()}


class PayloadLogger:
    """An observer that keeps sampled records for an owned writer task."""

    #: Seconds a batch may gather after the first record arrives.
    linger = 0.02

    def __init__(self, sink: Sink, config_for: ConfigFor, queue_size: int) -> None:
        self.sink = sink
        self._config_for = config_for
        self._queue_size = queue_size
        self._waiting: list[tuple[InferenceRecord, frozenset[str]]] = []
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._configs: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self.dropped = 0
        self.written = 0
        #: Told how many records were dropped (a Prometheus counter's ``inc``).
        self.on_drop: Callable[[int], None] | None = None

    async def start(self) -> None:
        self._wake, self._stopping = asyncio.Event(), False
        self._task = asyncio.create_task(self._write_batches(), name="inferline-payload-log")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Write everything waiting, then close the sink."""
        if self._task is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.wait([self._task])
            self._task = None
        await self.sink.close()

    def observe(self, record: InferenceRecord) -> None:
        if self._wake is None or self._stopping:
            return
        key = (record.model, record.version)
        config = self._configs.get(key)
        if config is None:
            settings = self._config_for(*key)
            config = self._configs[key] = (settings.sample_rate, frozenset(settings.redact))
        if config[0] < 1.0 and random.random() >= config[0]:
            return
        waiting = self._waiting
        if len(waiting) >= self._queue_size:
            self._drop(1)
            return
        waiting.append((record, config[1]))
        if len(waiting) == 1:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count)

    async def _write_batches(self) -> None:
        wake = self._wake
        if wake is None:  # pragma: no cover - start() sets it before the task runs
            return
        while True:
            await wake.wait()
            wake.clear()
            if not self._stopping:
                await asyncio.sleep(self.linger)
            batch, self._waiting = self._waiting, []
            for start in range(0, len(batch), BATCH):
                await self._write(batch[start : start + BATCH])
            if self._stopping and not self._waiting:
                return

    async def _write(self, batch: list[tuple[InferenceRecord, frozenset[str]]]) -> None:
        try:
            lines = await asyncio.to_thread(_encode_all, batch)
            await self.sink.write(lines)
            self.written += len(lines)
        except Exception:  # a broken sink loses this batch, never the server
            logger.exception("payload log: %d records could not be written", len(batch))
            self._drop(len(batch))


def _encode_all(batch: list[tuple[InferenceRecord, frozenset[str]]]) -> list[bytes]:
    return [encode_record(record, redact) for record, redact in batch]


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("payload log writer stopped", exc_info=task.exception())


class FileSink:
    """JSON lines in ``<folder>/payloads.jsonl``, rotated at ``max_bytes`` keeping ``backups``."""

    def __init__(self, folder: Path, max_bytes: int, backups: int) -> None:
        self.path = folder / "payloads.jsonl"
        self.max_bytes = max_bytes
        self.backups = backups

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write, lines)

    def _write(self, lines: list[bytes]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
            self._rotate()
        with self.path.open("ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")

    def _rotate(self) -> None:
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    async def close(self) -> None:
        return None


class RedisSink:
    """``XADD`` to a stream (field ``record``), trimmed to about ``maxlen`` entries."""

    def __init__(
        self, url: str, stream: str = "inferline:payloads", maxlen: int = 1_000_000
    ) -> None:
        self.url, self.stream, self.maxlen = url, stream, maxlen
        self._client: Any = None

    async def write(self, lines: list[bytes]) -> None:
        if self._client is None:
            from redis import asyncio as redis_asyncio

            self._client = redis_asyncio.from_url(self.url)
        pipe = self._client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {"record": line}, maxlen=self.maxlen, approximate=True)
        await pipe.execute()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class PostgresSink:
    """Rows in a table (``record`` as JSONB), created when missing."""

    def __init__(self, url: str, table: str = "inferline_payloads") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"invalid table name {table!r}")
        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.table = table
        self._conn: Any = None

    async def write(self, lines: list[bytes]) -> None:
        import psycopg

        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            await self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "id BIGSERIAL PRIMARY KEY, logged_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "request_id TEXT, model TEXT, version TEXT, record JSONB NOT NULL)"
            )
        rows = []
        for line in lines:
            doc = orjson.loads(line)
            rows.append((doc["request_id"], doc["model"], doc["version"], line.decode()))
        async with self._conn.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO {self.table} (request_id, model, version, record) "
                "VALUES (%s, %s, %s, %s::jsonb)",
                rows,
            )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
