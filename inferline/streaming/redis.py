"""Redis Streams: a consumer group in, a results stream out, and nothing lost between.

Results, dead letters and acknowledgements are written by one Lua script (the batch
as one JSON argument, decoded by cjson in Redis), which
Redis runs atomically like a MULTI/EXEC block, with one difference that matters:
each result is written only if its ``XACK`` acknowledged the entry. An entry
another consumer claimed and already answered acknowledges nothing, so its second
answer is dropped: every message gets exactly one result in the sink, even when a
slow consumer's entries were claimed from under it. (A plain MULTI/EXEC would
write both.)

Entries a dead consumer left pending are claimed with ``XAUTOCLAIM`` once idle
for ``claim_idle_ms``; their delivery count comes from ``XPENDING``. The group is
created at id ``0``, so entries added before the first consumer started are read
too. Source, sink, dead letter and result keys must live in the same Redis (the
script needs them in one server; with Redis Cluster, give them one hash tag).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import orjson

from inferline.errors import BadRequest
from inferline.streaming.consumer import DeadLetter, Result
from inferline.streaming.messages import Delivery, result_document

__all__ = ["RedisBroker", "StreamURL", "parse_stream_url", "redis_status"]

logger = logging.getLogger(__name__)

#: KEYS: source, sink, dead letter. ARGV: group, ttl ms (0: none), then the batch as one
#: JSON array of [kind ("r" result / "d" dead), entry id, result key ("" none), key value,
#: [field, value, ...]]: one argument, so the client encodes three, not thousands.
_SETTLE = """
local group = ARGV[1]
local ttl = tonumber(ARGV[2])
local written = 0
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local kind, id, key, value, fields = item[1], item[2], item[3], item[4], item[5]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    local target = KEYS[2]
    if kind == 'd' then target = KEYS[3] end
    redis.call('XADD', target, '*', unpack(fields))
    if key ~= '' then
      if ttl > 0 then
        redis.call('SET', key, value, 'PX', ttl)
      else
        redis.call('SET', key, value)
      end
    end
    written = written + 1
  end
end
return written
"""


@dataclass(frozen=True, slots=True)
class StreamURL:
    """``redis://host:port/db?stream=NAME`` split into the server and the stream."""

    server: str
    stream: str


def parse_stream_url(url: str) -> StreamURL:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{url!r} is not a redis:// URL")
    query = parse_qs(parts.query)
    streams = query.pop("stream", [])
    if len(streams) != 1 or not streams[0]:
        raise ValueError(f"{url!r} needs one ?stream=NAME")
    rest = urlencode({k: v[-1] for k, v in query.items()})
    return StreamURL(urlunsplit(parts._replace(query=rest)), streams[0])


class RedisBroker:
    """One consumer in a Redis Streams consumer group."""

    def __init__(
        self,
        server: str,
        source: str,
        sink: str,
        dead_letter: str,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int,
        results_key: str | None = None,
        ttl_seconds: float | None = None,
        id_field: str = "id",
    ) -> None:
        self.server = server
        self.source = source
        self.sink = sink
        self.dead_letter = dead_letter
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.results_key = results_key
        self.ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        self.id_field = id_field
        self._redis: Any = None
        self._settle: Any = None
        self._cursor = "0-0"
        self._next_claim = 0.0

    async def start(self) -> None:
        from redis import asyncio as aioredis
        from redis.exceptions import ResponseError

        # Bytes, decoded here: a producer's non-UTF-8 value must reach the dead letter,
        # not fail every read (and claim) of the batch it is in.
        self._redis = aioredis.Redis.from_url(self.server, decode_responses=False)
        try:
            await self._redis.xgroup_create(self.source, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._settle = self._redis.register_script(_SETTLE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await self._claim(count)
            # A backlog of a dead consumer's entries: keep claiming until it is gone.
            every = min(self.claim_idle_ms / 2000, 5.0)
            self._next_claim = now if claimed else now + every
            if claimed:
                return claimed
        reply = await self._redis.xreadgroup(
            self.group, self.consumer, {self.source: ">"}, count=count, block=block_ms or None
        )
        if not reply:
            return []
        return [_delivery(entry_id, fields, 1) for entry_id, fields in reply[0][1]]

    async def _claim(self, count: int) -> list[Delivery]:
        reply = await self._redis.xautoclaim(
            self.source, self.group, self.consumer, self.claim_idle_ms, self._cursor, count=count
        )
        self._cursor = _text(reply[0])
        entries = [(_text(i), f) for i, f in reply[1] if f is not None]
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        gone = [_text(i) for i, f in reply[1] if f is None] + deleted
        if gone:  # trimmed from the stream before anyone scored them: nothing to answer
            await self._redis.xack(self.source, self.group, *gone)
            logger.warning("%d pending entries were deleted from %s", len(gone), self.source)
        if not entries:
            return []
        pending = await self._redis.xpending_range(
            self.source,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) * 4 + 16,
            consumername=self.consumer,
        )
        attempts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        logger.info("claimed %d idle entries of %s", len(entries), self.source)
        return [_delivery(i, f, attempts.get(i, 2)) for i, f in entries]

    async def settle(
        self, results: list[Result], dead: list[DeadLetter], retry: list[Delivery]
    ) -> None:
        """``retry`` stays pending; ``XAUTOCLAIM`` hands it out again once idle."""
        if not results and not dead:
            return
        items: list[Any] = []
        for result in results:
            key, value = "", ""
            if self.results_key is not None:
                key = _format_key(self.results_key, result.id)
                value = result_document(result.fields).decode()
            items.append(("r", result.delivery.ref, key, value, _flat(result.fields)))
        for letter in dead:
            items.append(("d", letter.delivery.ref, "", "", _flat(letter.fields)))
        args = [self.group, self.ttl_ms, orjson.dumps(items)]
        await self._settle(keys=[self.source, self.sink, self.dead_letter], args=args)

    async def backlog(self) -> tuple[int | None, int | None]:
        for group in await self._redis.xinfo_groups(self.source):
            if _text(group["name"]) == self.group:
                return group.get("lag"), group.get("pending")
        return None, None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _delivery(entry_id: bytes | str, raw: dict[bytes, bytes], attempts: int) -> Delivery:
    entry_id = _text(entry_id)
    # Not UTF-8: the replacement character makes the value fail to parse (a dead letter).
    fields = {_text(k): _text(v) for k, v in raw.items()}
    millis = entry_id.partition("-")[0]
    produced = int(millis) / 1000 if millis.isdigit() else None
    return Delivery(entry_id, fields, attempts, entry_id, produced)


def _flat(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _format_key(pattern: str, message_id: str) -> str:
    try:
        return pattern.format(id=message_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise BadRequest(f"--results-key {pattern!r} may only use {{id}}") from exc


async def redis_status(
    source: StreamURL, group: str | None, sink: str | None, dead_letter: str
) -> dict[str, Any]:
    """Groups (lag, pending, consumers), dead letters and results per second (last minute)."""
    from redis import asyncio as aioredis

    redis = aioredis.Redis.from_url(source.server, decode_responses=True)
    try:
        groups = []
        with contextlib.suppress(Exception):
            groups = await redis.xinfo_groups(source.stream)
        report: dict[str, Any] = {
            "stream": source.stream,
            "length": await redis.xlen(source.stream),
            "groups": [],
            "dead_letters": await redis.xlen(dead_letter),
        }
        for info in groups:
            if group is not None and info["name"] != group:
                continue
            consumers = await redis.xinfo_consumers(source.stream, info["name"])
            report["groups"].append(
                {
                    "name": info["name"],
                    "lag": info.get("lag"),
                    "pending": info["pending"],
                    "consumers": [
                        {"name": c["name"], "pending": c["pending"], "idle_ms": c["idle"]}
                        for c in consumers
                    ],
                }
            )
        if sink is not None:
            since = int(time.time() * 1000) - 60_000
            recent = await redis.xrange(sink, min=f"{since}-0", max="+", count=1_000_000)
            report["results_per_second"] = round(len(recent or []) / 60, 2)
        return report
    finally:
        await redis.aclose()
