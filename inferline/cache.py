"""Prediction cache: identical inputs to the same model version answered from memory.

Off by default; a model turns it on in its settings. The key is a SHA-256 over
the model name, version, a hash of its signature and the canonical bytes of the
validated inputs (names sorted, dtype, shape, data), so a promoted version never
sees answers cached for another. Only successful answers are stored. The store
is an in-process LRU bounded in bytes with a TTL, or Redis by URL; when Redis is
unreachable the request is simply answered without the cache.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import orjson

from inferline.codecs import decode_bytes_raw, encode_bytes_raw
from inferline.settings.security import redact_url

__all__ = ["LocalCache", "PredictionCache", "RedisCache", "cache_key", "signature_hash"]

logger = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray[Any, Any]]


class PredictionCache(Protocol):
    async def get(self, key: bytes) -> dict[str, np.ndarray[Any, Any]] | None: ...
    async def put(self, key: bytes, outputs: Arrays) -> None: ...
    async def close(self) -> None: ...


def signature_hash(signature: Any) -> bytes:
    """Stable hash of a signature (anything orjson can write with sorted keys)."""
    return hashlib.sha256(orjson.dumps(signature, option=orjson.OPT_SORT_KEYS)).digest()


def cache_key(model: str, version: str, signature: bytes, inputs: Arrays) -> bytes:
    digest = hashlib.sha256()
    digest.update(f"{model}\0{version}\0".encode())
    digest.update(signature)
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":
            digest.update(encode_bytes_raw(array))
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


def _nbytes(outputs: Arrays) -> int:
    return sum(
        a.nbytes if a.dtype.kind != "O" else len(encode_bytes_raw(a)) for a in outputs.values()
    )


class LocalCache:
    """In-process LRU bounded in bytes; entries expire after ``ttl`` seconds."""

    def __init__(
        self, max_bytes: int, ttl: float, on_evict: Callable[[], None] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.size = 0
        self.evictions = 0
        self._on_evict = on_evict
        self._entries: OrderedDict[bytes, tuple[float, int, dict[str, np.ndarray[Any, Any]]]] = (
            OrderedDict()
        )

    async def get(self, key: bytes) -> dict[str, np.ndarray[Any, Any]] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, size, outputs = entry
        if expires < time.monotonic():
            del self._entries[key]
            self.size -= size
            return None
        self._entries.move_to_end(key)
        return outputs

    async def put(self, key: bytes, outputs: Arrays) -> None:
        size = _nbytes(outputs)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old[1]
        # Copies, read-only: a caller mutating its arrays must not change what is cached.
        frozen = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            frozen[name] = copy
        self._entries[key] = (time.monotonic() + self.ttl, size, frozen)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.size -= evicted
            self.evictions += 1
            if self._on_evict is not None:
                self._on_evict()

    async def close(self) -> None:
        self._entries.clear()
        self.size = 0


class RedisCache:
    """Entries in Redis with a TTL; any Redis failure is a miss, never an error."""

    def __init__(
        self, url: str, ttl: float, prefix: str = "inferline:cache:", timeout: float = 1.0
    ) -> None:
        self.url, self.ttl, self.prefix, self.timeout = url, ttl, prefix, timeout
        self._client: Any = None
        self.errors = 0

    def _redis(self) -> Any:
        if self._client is None:
            from redis import asyncio as redis_asyncio

            self._client = redis_asyncio.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    async def get(self, key: bytes) -> dict[str, np.ndarray[Any, Any]] | None:
        try:
            raw = await self._redis().get(self.prefix.encode() + key)
        except Exception as exc:  # noqa: BLE001 - the cache is optional: serve uncached
            self._failed(exc)
            return None
        return None if raw is None else _unpack(raw)

    async def put(self, key: bytes, outputs: Arrays) -> None:
        try:
            await self._redis().set(
                self.prefix.encode() + key, _pack(outputs), px=int(self.ttl * 1000)
            )
        except Exception as exc:  # noqa: BLE001 - the cache is optional: serve uncached
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            logger.warning(
                "prediction cache at %s unavailable (%d errors): %s",
                redact_url(self.url),
                self.errors,
                exc,
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


_HEADER = struct.Struct("<I")


def _pack(outputs: Arrays) -> bytes:
    meta, chunks = [], []
    for name, array in outputs.items():
        data = (
            encode_bytes_raw(array)
            if array.dtype.kind == "O"
            else np.ascontiguousarray(array).tobytes()
        )
        meta.append([name, array.dtype.str, list(array.shape), len(data)])
        chunks.append(data)
    header = orjson.dumps(meta)
    return _HEADER.pack(len(header)) + header + b"".join(chunks)


def _unpack(raw: bytes) -> dict[str, np.ndarray[Any, Any]]:
    (length,) = _HEADER.unpack_from(raw)
    meta = orjson.loads(raw[4 : 4 + length])
    pos = 4 + length
    outputs = {}
    for name, dtype, shape, size in meta:
        chunk = raw[pos : pos + size]
        pos += size
        if dtype == "|O":
            array = decode_bytes_raw(name, chunk, int(np.prod(shape))).reshape(shape)
        else:
            array = np.frombuffer(chunk, dtype=np.dtype(dtype)).reshape(shape)
        outputs[name] = array
    return outputs
