"""What the data plane tells observers about each inference.

An observer's ``observe`` runs on the event loop right after a request is
answered, so it must only look and enqueue: anything slow (writing files,
statistics over windows) happens later, off the request's path.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["InferenceRecord", "Observer", "iso_utc"]


@dataclass(slots=True)
class InferenceRecord:
    """One answered (or refused) inference request; observers only read it.

    Not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, which made building one per request five times dearer.
    """

    request_id: str
    model: str
    #: The version that answered; "" when the request failed before one was chosen.
    version: str
    #: "rest", "grpc", "batch", "stream", ...
    protocol: str
    #: Wall-clock time the request arrived (``time.time()``), for logs and windows.
    started: float
    #: Seconds from arrival to answer.
    latency: float
    #: HTTP status the request ended with (200 on success).
    status: int
    inputs: Mapping[str, np.ndarray[Any, Any]]
    outputs: Mapping[str, np.ndarray[Any, Any]] | None = None
    error: str | None = None
    #: "hit" or "miss" when the model's prediction cache was consulted, else None.
    cache: str | None = None


class Observer(Protocol):
    def observe(self, record: InferenceRecord) -> None:
        """Look at one record; never block, never raise."""


#: The second :func:`iso_utc` formatted last and its text up to the seconds (one tuple,
#: swapped whole, so a payload-encoding thread and the loop can share it).
_second: tuple[int, str] = (-1, "")


def iso_utc(timestamp: float) -> str:
    """``datetime.fromtimestamp(t, UTC).isoformat()`` with ``Z`` for ``+00:00``, cheaply.

    Logs and payload records stamp every request; formatting the date part once
    per second instead of per line makes the stamp a fraction of its cost.
    """
    global _second
    second = int(timestamp)
    micros = round((timestamp - second) * 1_000_000)
    if micros >= 1_000_000 or timestamp < 0:
        stamp = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat()
        return stamp.replace("+00:00", "Z")
    cached = _second
    if cached[0] != second:
        moment = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
        cached = _second = (second, moment.strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros:06d}Z" if micros else f"{cached[1]}Z"
