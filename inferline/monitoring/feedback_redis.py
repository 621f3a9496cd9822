"""Answered requests and quality windows in Redis, shared by workers and replicas.

Keys, under ``monitoring.quality.store_prefix`` (``inferline:feedback:``):

- ``p:<request id>``: an answered request, expiring after ``pending_seconds``. Its
  outputs are written as dtype, shape and bytes behind a JSON header (never pickle);
- ``order``: the waiting ids scored by answer time, which keeps them to ``pending``
  (the oldest go first), trimmed by the same Lua script that writes the entries;
- ``w:<["model","version"]>``: a list of joined pairs (JSON), trimmed to ``window``;
- ``versions``: the (model, version) pairs that have a window.

Writes leave the request path: ``remember`` puts the entry in a bounded dict, and
an owned task writes what is queued, after letting it gather for ``LINGER`` seconds,
in script calls of up to ``BATCH`` entries.
``take`` first writes what is still queued (a truth may follow its answer at once),
then ``GETDEL``\\s, so exactly one worker gets an id. While Redis is unreachable
requests are answered as ever: their entries are dropped, counted and logged, and
feedback and quality reads answer 503, since a truth sent again later may still
join (an "unknown" would tell the sender to give up on it). The script names keys
it builds, so this store needs one Redis, not a Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import redis
from redis import asyncio as redis_asyncio

from inferline.codecs import decode_bytes_raw, encode_bytes_raw
from inferline.errors import Unavailable
from inferline.monitoring.feedback_join import Pending
from inferline.monitoring.feedback_store import Joined
from inferline.monitoring.quality import Array, Row, joined_rows
from inferline.settings import QualitySettings

__all__ = ["RedisStore", "pack_pending", "unpack_pending"]

logger = logging.getLogger(__name__)

#: Answered requests waiting to be written; past this they are dropped and counted.
QUEUE = 10_000
#: Entries per script call: serialising one takes a few microseconds of the loop.
BATCH = 256
#: Seconds the writer lets answers gather before it writes (unless a batch is full).
LINGER = 0.01
#: Seconds a Redis call may take; and the pause after a failed write.
TIMEOUT = 1.0
RETRY_SECONDS = 1.0
#: At most one drop warning per this many seconds.
LOG_EVERY = 10.0

_FAILURES = (redis.RedisError, OSError)
_HEADER = struct.Struct("<I")
_Entry = tuple[str, str, float, Mapping[str, Array]]

# KEYS[1]: order. ARGV: pending-key prefix, ttl ms, bound, oldest time kept, then
# (request id, answered at, packed entry) per request.
_WRITE = """
local prefix, ttl, bound = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 5, #ARGV, 3 do
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 2], 'PX', ttl)
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local over = redis.call('ZCARD', KEYS[1]) - bound
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('DEL', prefix .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
return over
"""


class RedisStore:
    """The shared store: see the module docstring. Constructing it does no I/O."""

    def __init__(
        self,
        url: str,
        settings: QualitySettings,
        clock: Callable[[], float] = time.time,
        queue_size: int = QUEUE,
    ) -> None:
        self.url, self.settings, self.clock, self.queue_size = url, settings, clock, queue_size
        self.where = _where(url)
        self.prefix = settings.store_prefix
        self.dropped = 0
        self.written = 0
        self.on_drop: Callable[[int], None] | None = None
        self._queue: dict[str, _Entry] = {}
        self._client: Any = None
        self._script: Any = None
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        self._flushing: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._logged_at = -LOG_EVERY

    # -- the request path ----------------------------------------------------------------
    def remember(
        self, request_id: str, model: str, version: str, at: float, outputs: Mapping[str, Array]
    ) -> None:
        """Queue the entry for the writer: a dict insert, no I/O."""
        queue = self._queue
        if not request_id:
            return
        if len(queue) >= self.queue_size:
            self._drop(1, "the write queue is full")
            return
        if not queue and self._wake is not None:
            self._wake.set()
        queue[request_id] = (model, version, at, outputs)

    # -- the writer ----------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="inferline-feedback-writer")
        self._task.add_done_callback(_log_crash)
        if self._queue:
            self._wake.set()

    async def stop(self) -> None:
        """Write what is queued (if Redis answers), then close the connections."""
        await self.flush()  # waits for a write under way, so cancelling loses nothing
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await self.flush()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def _run(self) -> None:
        wake = self._wake
        if wake is None:  # pragma: no cover - start() sets it before the task runs
            return
        while True:
            await wake.wait()
            if len(self._queue) < BATCH:
                await asyncio.sleep(LINGER)  # one round trip per batch, not per request
            wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_SECONDS)  # Redis is down: queue (and drop) a while

    async def flush(self) -> bool:
        """Write what is queued now; False when Redis refused it (those entries are dropped)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            if not self._queue:
                return True
            items, self._queue = list(self._queue.items()), {}
            for start in range(0, len(items), BATCH):
                try:
                    await self._write(items[start : start + BATCH])
                except _FAILURES as exc:
                    self._drop(len(items) - start, exc)
                    return False
                except Exception as exc:  # counted, logged with its traceback, never raised
                    logger.exception("feedback store at %s: write failed", self.where)
                    self._drop(len(items) - start, exc)
                    return False
            self.written += len(items)
            if self._failing:
                self._failing = False
                logger.warning(
                    "feedback store at %s: writing again (%d dropped so far)",
                    self.where,
                    self.dropped,
                )
            return True

    async def _write(self, items: list[tuple[str, _Entry]]) -> None:
        quality = self.settings
        args: list[Any] = [
            self.prefix + "p:",
            int(quality.pending_seconds * 1000),
            quality.pending,
            self.clock() - quality.pending_seconds,
        ]
        for request_id, entry in items:
            args += (request_id, entry[2], pack_pending(entry))
        self._redis()
        await self._script(keys=[self.prefix + "order"], args=args)

    def _drop(self, count: int, reason: object) -> None:
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count)
        now = time.monotonic()
        if not self._failing or now - self._logged_at >= LOG_EVERY:
            self._failing, self._logged_at = True, now
            logger.warning(
                "feedback store at %s: %d answered request(s) not kept for their truth "
                "(%d so far): %s",
                self.where,
                count,
                self.dropped,
                reason,
            )

    # -- feedback (on the loop, off the request path) ------------------------------------
    async def take(self, request_ids: Sequence[str]) -> list[Pending | None]:
        if not request_ids:
            return []
        await self.flush()
        oldest = self.clock() - self.settings.pending_seconds
        with self._unavailable("send the truths again later"):
            pipe = self._redis().pipeline(transaction=False)
            for request_id in request_ids:
                pipe.getdel(self._pending_key(request_id))
            pipe.zrem(self.prefix + "order", *request_ids)
            found = await pipe.execute()
        taken = [unpack_pending(raw) if raw is not None else None for raw in found[:-1]]
        return [p if p is not None and p.at >= oldest else None for p in taken]

    async def put_back(self, entries: Sequence[tuple[str, Pending]]) -> None:
        now, seconds = self.clock(), self.settings.pending_seconds
        with self._unavailable("send the truths again later"):
            pipe = self._redis().pipeline(transaction=False)
            for request_id, p in entries:
                ttl = int((p.at + seconds - now) * 1000)
                if ttl > 0:
                    entry = (p.model, p.version, p.at, p.outputs)
                    pipe.set(self._pending_key(request_id), pack_pending(entry), px=ttl)
                    pipe.zadd(self.prefix + "order", {request_id: p.at})
            await pipe.execute()

    async def add(self, at: float, joined: Sequence[Joined]) -> None:
        rows: dict[tuple[str, str], list[bytes]] = {}
        for pending, reading, truths in joined:
            encoded = rows.setdefault((pending.model, pending.version), [])
            encoded += (_pack_row(reading.task, row) for row in joined_rows(at, reading, truths))
        with self._unavailable("send the truths again later"):
            pipe = self._redis().pipeline(transaction=True)
            for (model, version), encoded in rows.items():
                key = self._window_key(model, version)
                pipe.rpush(key, *encoded)
                pipe.ltrim(key, -self.settings.window, -1)
                pipe.sadd(self.prefix + "versions", orjson.dumps([model, version]))
            await pipe.execute()

    # -- reports (from a thread) ---------------------------------------------------------
    def window(self, model: str, version: str) -> tuple[str, list[Row]]:
        with self._unavailable("quality figures need it"):
            raw = self._redis_sync().lrange(self._window_key(model, version), 0, -1)
        rows = [orjson.loads(item) for item in raw]
        task = rows[-1][1] if rows else "classification"
        return task, [(r[0], r[2], r[3], r[4]) for r in rows]

    def versions(self) -> set[tuple[str, str]]:
        with self._unavailable("quality figures need it"):
            members = self._redis_sync().smembers(self.prefix + "versions")
        return {(model, version) for model, version in map(orjson.loads, members)}

    # -- connections -----------------------------------------------------------------------
    def _redis(self) -> Any:
        if self._client is None:
            self._client = redis_asyncio.from_url(
                self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
            self._script = self._client.register_script(_WRITE)
        return self._client

    def _redis_sync(self) -> Any:
        with self._sync_lock:
            if self._sync is None:
                self._sync = redis.Redis.from_url(
                    self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
                )
            return self._sync

    @contextlib.contextmanager
    def _unavailable(self, hint: str) -> Iterator[None]:
        """Redis failures become one 503, chained, naming the store but no password."""
        try:
            yield
        except _FAILURES as exc:
            raise Unavailable(
                f"the feedback store at {self.where} is unreachable ({exc}); {hint}"
            ) from exc

    def _pending_key(self, request_id: str) -> str:
        return f"{self.prefix}p:{request_id}"

    def _window_key(self, model: str, version: str) -> bytes:
        return self.prefix.encode() + b"w:" + orjson.dumps([model, version])


def _where(url: str) -> str:
    """Host and port (or socket path) of a Redis URL: never its password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" + (
        parts.path if parts.scheme == "unix" else ""
    )


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("feedback store writer stopped", exc_info=task.exception())


def _pack_row(task: str, row: Row) -> bytes:
    at, predicted, truth, scores = row
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).tolist()  # exact: f32 widens losslessly
    return orjson.dumps([at, task, predicted, truth, scores])


def pack_pending(entry: _Entry) -> bytes:
    """Model, version, time and outputs: a JSON header, then each array's bytes."""
    model, version, at, outputs = entry
    meta, chunks = [], []
    for name, array in outputs.items():
        if array.dtype.kind == "O":
            data = encode_bytes_raw(array)
        else:
            data = np.ascontiguousarray(array).tobytes()
        meta.append([name, array.dtype.str, list(array.shape), len(data)])
        chunks.append(data)
    header = orjson.dumps([model, version, at, meta])
    return b"".join([_HEADER.pack(len(header)), header, *chunks])


def unpack_pending(raw: bytes) -> Pending:
    (length,) = _HEADER.unpack_from(raw)
    model, version, at, meta = orjson.loads(raw[4 : 4 + length])
    pos = 4 + length
    outputs: dict[str, Array] = {}
    for name, dtype, shape, size in meta:
        chunk = memoryview(raw)[pos : pos + size]
        pos += size
        if dtype == "|O":
            count = int(np.prod(shape, dtype=np.int64))
            outputs[name] = decode_bytes_raw(name, chunk, count).reshape(shape)
        else:
            outputs[name] = np.frombuffer(chunk, dtype=np.dtype(dtype)).reshape(shape)
    return Pending(model, version, at, outputs)
