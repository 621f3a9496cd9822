"""Where answered requests wait for their truth, and where joined pairs are kept.

One small interface, two stores. :class:`LocalStore` keeps both in the process
(the default). :class:`~inferline.monitoring.feedback_redis.RedisStore` keeps
them in Redis (``monitoring.quality.store_url``), so every ``--workers N``
process and every replica joins any request's truth and reports the same
figures. The monitor does not care which one it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from inferline.monitoring.feedback_join import FeedbackJoin, Pending
from inferline.monitoring.quality import (
    Array,
    QualityWindow,
    Reading,
    Row,
    joined_rows,
)
from inferline.settings import QualitySettings

__all__ = ["FeedbackStore", "Joined", "LocalStore", "open_store"]

#: Ids looked up per slice of a feedback call: a slice holds the loop under half a ms.
TAKE_BATCH = 128

#: A request joined to its truth: what it answered, how it reads, the truth per row.
Joined = tuple[Pending, Reading, list[Any]]


class FeedbackStore(Protocol):
    """Answered requests by id (bounded by count and age) and a window per version."""

    #: Answered requests that could not be kept (the store was unreachable or behind).
    dropped: int
    #: Called with each count of dropped requests (the server counts them in a metric).
    on_drop: Callable[[int], None] | None

    def remember(
        self, request_id: str, model: str, version: str, at: float, outputs: Mapping[str, Array]
    ) -> None:
        """Keep an answered request; on the event loop per request: O(1), no I/O."""

    async def take(self, request_ids: Sequence[str]) -> list[Pending | None]:
        """Each id's answer, once (None: unknown, too old, or already taken)."""

    async def put_back(self, entries: Sequence[tuple[str, Pending]]) -> None:
        """Answers taken but refused a truth: they may be sent again, corrected."""

    async def add(self, at: float, joined: Sequence[Joined]) -> None:
        """Append joined pairs to their version's window."""

    def window(self, model: str, version: str) -> tuple[str, list[Row]]:
        """A version's task and joined pairs, oldest first (call from a thread)."""

    def versions(self) -> set[tuple[str, str]]:
        """(model, version) pairs with a window (call from a thread)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalStore:
    """Both in this process: a :class:`FeedbackJoin` and a deque per version."""

    def __init__(self, settings: QualitySettings, clock: Callable[[], float] = time.time) -> None:
        self.join = FeedbackJoin(settings.pending, settings.pending_seconds, clock)
        self.window_size = settings.window
        self.dropped = 0
        self.on_drop: Callable[[int], None] | None = None
        self._windows: dict[tuple[str, str], QualityWindow] = {}
        # Bound once: remember() is called per request.
        self.remember = self.join.remember

    async def take(self, request_ids: Sequence[str]) -> list[Pending | None]:
        taken: list[Pending | None] = []
        for start in range(0, len(request_ids), TAKE_BATCH):
            if start:
                await asyncio.sleep(0)  # let requests through between slices
            taken += self.join.take_many(request_ids[start : start + TAKE_BATCH])
        return taken

    async def put_back(self, entries: Sequence[tuple[str, Pending]]) -> None:
        for request_id, p in entries:
            self.join.remember(request_id, p.model, p.version, p.at, p.outputs)

    async def add(self, at: float, joined: Sequence[Joined]) -> None:
        for pending, reading, truths in joined:
            key = (pending.model, pending.version)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = QualityWindow(self.window_size)
            window.add(reading.task, joined_rows(at, reading, truths))

    def window(self, model: str, version: str) -> tuple[str, list[Row]]:
        window = self._windows.get((model, version))
        return ("classification", []) if window is None else (window.task, window.snapshot())

    def versions(self) -> set[tuple[str, str]]:
        return set(list(self._windows))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def open_store(settings: QualitySettings, clock: Callable[[], float] = time.time) -> FeedbackStore:
    """The store the settings ask for; no I/O (Redis is first reached by ``start``)."""
    if settings.store_url is None:
        return LocalStore(settings, clock)
    from inferline.monitoring.feedback_redis import RedisStore

    return RedisStore(settings.store_url, settings, clock)
