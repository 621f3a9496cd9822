"""What the data plane tells observers about each inference.

An observer's ``observe`` runs on the event loop right after a request is
answered, so it must only look and enqueue: anything slow (writing files,
statistics over windows) happens later, off the request's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["InferenceRecord", "Observer"]


@dataclass(slots=True, frozen=True)
class InferenceRecord:
    """One answered (or refused) inference request."""

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
