"""Choosing an endpoint per call: round-robin or least outstanding requests.

An endpoint that could not be reached is out of rotation until its cool-down
ends; when every endpoint is cooling down, the one whose cool-down ends first is
tried anyway (a call never fails only because of the bookkeeping). Retries ask
for an endpoint other than the ones that already failed the call, when one is up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from inferline.client._tensors import Transport

__all__ = ["Balancer", "Endpoint", "Policy"]

Policy = Literal["round_robin", "least_outstanding"]


@dataclass(eq=False, slots=True)
class Endpoint:
    transport: Transport
    #: Calls sent and not yet answered.
    outstanding: int = 0
    #: ``time.monotonic()`` before which the endpoint is out of rotation.
    down_until: float = 0.0
    #: Calls this endpoint answered (with a result or a server error).
    answered: int = 0


class Balancer:
    """The endpoints of one client and the policy that picks among them."""

    def __init__(self, transports: Sequence[Transport], policy: Policy, cooldown: float) -> None:
        if policy not in ("round_robin", "least_outstanding"):
            raise ValueError(
                f"balance must be 'round_robin' or 'least_outstanding', not {policy!r}"
            )
        self.endpoints = [Endpoint(t) for t in transports]
        self.policy = policy
        self.cooldown = cooldown
        self._next = 0

    def pick(self, avoid: set[Endpoint]) -> Endpoint:
        """The endpoint for the next attempt; ``avoid`` holds those that failed this call."""
        now = time.monotonic()
        count = len(self.endpoints)
        start, self._next = self._next, (self._next + 1) % count
        # From a moving start, so round-robin (and least-outstanding's ties) rotate.
        order = [self.endpoints[(start + i) % count] for i in range(count)]
        up = [e for e in order if e.down_until <= now]
        candidates = [e for e in up if e not in avoid] or up
        if not candidates:
            return min(order, key=lambda e: e.down_until)
        if self.policy == "round_robin":
            return candidates[0]
        return min(candidates, key=lambda e: e.outstanding)

    @contextmanager
    def track(self, endpoint: Endpoint) -> Iterator[None]:
        """Count ``endpoint``'s call as outstanding while it runs."""
        endpoint.outstanding += 1
        try:
            yield
        finally:
            endpoint.outstanding -= 1

    def mark_down(self, endpoint: Endpoint) -> None:
        endpoint.down_until = time.monotonic() + self.cooldown

    def mark_up(self, endpoint: Endpoint) -> None:
        endpoint.down_until = 0.0
        endpoint.answered += 1
