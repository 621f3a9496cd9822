"""Answered requests waiting for their ground truth, by request id, in this process.

The join runs on the event loop for every answered request, so it has no step
whose cost grows with its size (see :class:`FeedbackJoin`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FeedbackJoin", "Pending"]

Array = np.ndarray[Any, Any]


@dataclass(slots=True, frozen=True)
class Pending:
    """An answered request waiting for its truth."""

    model: str
    version: str
    at: float
    outputs: Mapping[str, Array]


#: (model, version, answered at, index of the outputs in their generation's list) per
#: request id: strings and numbers, which the garbage collector stops tracking (as it
#: does a dict of arrays), so 100,000 waiting requests add nothing to a full
#: collection. A Pending per request (or a tuple holding the dict) would add each one.
_Meta = tuple[str, str, float, int]


class _Generation:
    """Up to ``generation`` answered requests: ids in a dict, their outputs in a list."""

    __slots__ = ("closed_at", "meta", "outputs")

    def __init__(self) -> None:
        self.closed_at = 0.0
        self.meta: dict[str, _Meta] = {}
        self.outputs: list[Mapping[str, Array] | None] = []


class FeedbackJoin:
    """Answered requests by id, bounded by count and age, with no O(n) step.

    Entries go into the newest of a few dozen generations: small plain dicts in a
    deque. A full newest generation is closed (stamped with the clock) and a new one
    opened; closed generations go whole, oldest first, when the total would pass
    ``size`` or when they were closed more than ``seconds`` ago (so every entry in
    them is older). ``take`` looks newest-first and checks the entry's own age.

    ``remember`` touches one small dict and list. A dict grows by copying itself: the
    step to 4096 entries took 144 µs on a slow machine, where one dict of 100,000
    stalled the loop for milliseconds; ``take`` looks in each generation, so there
    should not be hundreds: 4096 entries (``size / 16`` when smaller) balance the
    two. A dropped generation is freed two entries per ``remember``, not all at once
    (freeing 4096 answers took 2.5 ms).

    The bound counts answers remembered, taken or not (a taken one's place is freed
    with its generation), so memory stays bounded however fast truths come back:
    of the last ``size`` answers (as few as ``size - generation + 1`` once the oldest
    generation has gone; exactly ``size`` while ``size`` is under 32), those not
    yet taken are kept.
    """

    def __init__(
        self,
        size: int,
        seconds: float,
        clock: Callable[[], float] = time.time,
        generation: int | None = None,
    ) -> None:
        self.size, self.seconds, self.clock = size, seconds, clock
        self.generation = max(1, min(size, generation or min(4096, size // 16)))
        self._newest = _Generation()
        self._meta, self._outputs = self._newest.meta, self._newest.outputs
        #: Closed generations, oldest first, and how many answers they were given.
        self._closed: deque[_Generation] = deque()
        self._in_closed = 0
        #: Dropped generations, emptied a few entries per ``remember``.
        self._dying: list[_Generation] = []

    def __len__(self) -> int:
        """Answers waiting (not taken); O(generations)."""
        return sum(len(g.meta) for g in self._closed) + len(self._meta)

    def remember(
        self, request_id: str, model: str, version: str, at: float, outputs: Mapping[str, Array]
    ) -> None:
        """O(1): runs on the event loop for every answered request."""
        if not request_id:
            return
        kept = self._outputs
        if len(kept) >= self.generation:  # the list counts an id sent again, too
            self._rotate()
            kept = self._outputs
        self._meta[request_id] = (model, version, at, len(kept))
        kept.append(outputs)
        if self._dying:
            self._free()

    def take(self, request_id: str) -> Pending | None:
        """The request's answer, once: a second truth for the same id is unknown."""
        return self.take_many([request_id])[0]

    def take_many(self, request_ids: Sequence[str]) -> list[Pending | None]:
        """Each id's answer, once (an id twice in ``request_ids`` is found once).

        One set intersection per generation, in C, with every id: each id costs a
        lookup per generation (about 3 µs against the 25 generations of 100,000 on a
        slow machine), so callers on the event loop take a slice at a time.
        """
        oldest = self.clock() - self.seconds
        self._expire(oldest)
        wanted = set(request_ids)
        found: dict[str, tuple[_Meta, Mapping[str, Array]]] = {}
        for generation in (self._newest, *reversed(self._closed)):
            meta, kept = generation.meta, generation.outputs
            hits = meta.keys() & wanted
            for request_id in hits:  # every copy goes; the newest is the answer
                entry = meta.pop(request_id)
                outputs, kept[entry[3]] = kept[entry[3]], None
                if outputs is not None and request_id not in found:
                    found[request_id] = (entry, outputs)
        taken: list[Pending | None] = []
        for request_id in request_ids:
            hit = found.pop(request_id, None)
            if hit is None or hit[0][2] < oldest:
                taken.append(None)
            else:
                (model, version, at, _), outputs = hit
                taken.append(Pending(model, version, at, outputs))
        return taken

    def _rotate(self) -> None:
        """Close the full newest generation; make room for a whole new one."""
        now = self.clock()
        full = self._newest
        full.closed_at = now
        self._closed.append(full)
        self._in_closed += len(full.outputs)
        self._newest = _Generation()
        self._meta, self._outputs = self._newest.meta, self._newest.outputs
        while self._closed and self._in_closed > self.size - self.generation:
            self._drop()
        self._expire(now - self.seconds)

    def _expire(self, oldest: float) -> None:
        while self._closed and self._closed[0].closed_at < oldest:
            self._drop()

    def _drop(self) -> None:
        generation = self._closed.popleft()
        self._in_closed -= len(generation.outputs)
        if generation.meta or generation.outputs:
            self._dying.append(generation)

    def _free(self) -> None:
        """Release about two entries of a dropped generation (each pop is O(1))."""
        dying = self._dying[-1]
        meta, kept = dying.meta, dying.outputs
        if kept:
            kept.pop()
        if kept:
            kept.pop()
        if meta:
            meta.popitem()
        if meta:
            meta.popitem()
        if not kept and not meta:
            self._dying.pop()
