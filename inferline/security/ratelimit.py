"""Token buckets per principal: in this process, or shared by every process through Redis.

A bucket holds up to ``burst`` tokens and gains ``requests_per_second`` a
second; each request takes one, and one that finds none is refused with how
long until a token is back (``Retry-After``). In Redis each bucket is one hash
updated by one Lua script, atomically and on Redis's clock, so counts stay
exact across workers and replicas. If Redis cannot be reached, each process
falls back to its own buckets (and says so in the log) rather than refusing
everything or nothing.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from inferline.settings import RateLimitSettings
from inferline.settings.security import redact_url

__all__ = ["LocalBuckets", "RateLimiter", "RedisBuckets"]

logger = logging.getLogger(__name__)

# KEYS[1]: bucket; ARGV: rate, burst. Returns "0" (allowed) or the seconds to wait.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class LocalBuckets:
    """Buckets in this process; the least recently used is dropped past ``max_clients``."""

    def __init__(self, rate: float, burst: int, max_clients: int) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when a token was taken, else the seconds until one is back."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RedisBuckets:
    """Buckets in Redis, shared by every process that uses the same URL."""

    def __init__(self, url: str, rate: float, burst: int, prefix: str = "inferline:rl:") -> None:
        self.url, self.rate, self.burst, self.prefix = url, rate, burst, prefix
        self._client: Any = None
        self._script: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            from redis import asyncio as redis_asyncio

            self._client = redis_asyncio.from_url(
                self.url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._script = self._client.register_script(_SCRIPT)
        return self._script

    async def take(self, key: str) -> float:
        script = self._redis()
        wait = await script(keys=[self.prefix + key], args=[self.rate, self.burst])
        return float(wait)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class RateLimiter:
    """``await take(key)``: 0.0 or seconds to wait; Redis when configured, else local."""

    def __init__(self, settings: RateLimitSettings) -> None:
        rate = settings.requests_per_second
        if rate is None:
            raise ValueError("rate limits are off (auth.rate_limit.requests_per_second)")
        self.local = LocalBuckets(rate, settings.burst, settings.max_clients)
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.shared = RedisBuckets(url, rate, settings.burst) if url else None
        self._where = redact_url(url) if url else "this process"
        self.errors = 0

    def describe(self) -> str:
        return f"{self.local.rate:g}/s, burst {self.local.burst}, buckets in {self._where}"

    async def take(self, key: str) -> float:
        if self.shared is None:
            return self.local.take(key)
        try:
            return await self.shared.take(key)
        except Exception as exc:  # noqa: BLE001 - Redis down: limit per process meanwhile
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                logger.warning(
                    "rate-limit store %s unavailable (%d errors), limiting per process: %s",
                    self._where,
                    self.errors,
                    type(exc).__name__,
                )
            return self.local.take(key)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
