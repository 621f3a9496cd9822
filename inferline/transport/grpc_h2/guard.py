"""What a native gRPC connection allows a client: frame budgets and deadlines.

Mature HTTP/2 servers bound what a client can make them do without doing any
work itself: nghttp2 and h2o budget client stream resets (the rapid-reset attack,
CVE-2023-44487), PINGs, SETTINGS and empty frames, and cap the control frames
queued for a client that does not read; grpc-go closes idle connections. The
budgets here are token buckets: a burst, refilled at a steady rate, so a
well-behaved client never meets them and a flood meets them at once.

:class:`Deadlines` is the one timer of a connection: it fires at the earliest of
the handshake, stalled-read and idle deadlines, checks which passed, and re-arms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from inferline.transport.grpc_h2 import frames as f
from inferline.transport.grpc_h2.frames import ErrorCode, Limits
from inferline.transport.grpc_h2.streams import Stream

__all__ = ["Budget", "ConnectionError_", "Deadlines", "Guarded"]


class ConnectionError_(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Budget:
    """A token bucket: ``burst`` tokens, ``rate`` added back per second."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._at = 0.0

    def spend(self, now: float) -> bool:
        """Take one token at time ``now``; False when the budget is spent."""
        tokens = self._tokens
        if tokens < self._burst and self._at:
            tokens = min(self._burst, tokens + (now - self._at) * self._rate)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class Deadlines:
    """One connection's timer over its handshake, stalled-read and idle deadlines.

    ``state()`` says what the connection is doing: ``"handshake"`` (no preface and
    SETTINGS yet), ``"owing"`` (a frame, header block or request message begun and
    not finished), ``"idle"`` (no stream open) or ``"busy"``; ``opened()`` is the
    last stream id it saw (a new stream ends idleness; PINGs do not);
    ``expire(why)`` closes it. The connection sets ``last_read`` on every read.
    The timer fires at most every ``frame_timeout``, so an idle connection closes
    between ``idle_timeout`` and ``idle_timeout + frame_timeout`` after its last stream.
    """

    __slots__ = (
        "_expire",
        "_handle",
        "_limits",
        "_loop",
        "_opened",
        "_seen",
        "_state",
        "idle_since",
        "last_read",
        "now",
    )

    def __init__(
        self,
        limits: Limits,
        state: Callable[[], str],
        opened: Callable[[], int],
        expire: Callable[[str], None],
    ) -> None:
        self._limits = limits
        self._state = state
        self._opened = opened
        self._expire = expire
        self._loop = asyncio.get_running_loop()
        #: The loop's clock.
        self.now = self._loop.time
        self._handle: asyncio.TimerHandle | None = None
        self._seen = 0
        now = self._loop.time()
        self.last_read = now
        self.idle_since = now
        self._arm(min(limits.handshake_timeout, limits.frame_timeout))

    def _arm(self, delay: float) -> None:
        self._handle = self._loop.call_later(max(delay, 0.001), self._fire)

    def _fire(self) -> None:
        self._handle = None
        limits, now = self._limits, self._loop.time()
        state = self._state()
        opened = self._opened()
        if opened != self._seen:
            self._seen = opened
            self.idle_since = now
        if state == "handshake":
            left = limits.handshake_timeout - (now - self.idle_since)
            why = "no HTTP/2 preface and SETTINGS in time"
        elif state == "owing":
            left = limits.frame_timeout - (now - self.last_read)
            why = "a frame or request message not completed in time"
        elif state == "idle":
            left = limits.idle_timeout - (now - self.idle_since)
            why = "idle"
        else:  # busy: idleness counts from the last check that saw it busy
            self.idle_since = now
            left, why = limits.frame_timeout, ""
        if why and left <= 0:
            self._expire(why)
            return
        self._arm(min(left, limits.frame_timeout))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Guarded:
    """The connection's side of its budgets and deadlines (a base of ``Connection``)."""

    _limits: Limits
    _deadlines: Deadlines | None
    _control: int
    _settings_seen: bool
    _preface: bool
    _pending: bytearray
    _block_id: int
    _last_id: int
    _closed: bool
    streams: dict[int, Stream]
    transport: asyncio.Transport | None

    def _abandon(self) -> None:
        raise NotImplementedError

    def _state(self) -> str:
        """What the connection is doing, for :class:`Deadlines`."""
        if not self._settings_seen:
            return "handshake"
        if self._pending or self._block_id:
            return "owing"
        if not self.streams:
            return "idle"
        for stream in self.streams.values():
            if not stream.remote_closed:
                return "owing"
        return "busy"

    def _opened(self) -> int:
        return self._last_id

    def _expire(self, why: str) -> None:
        """A deadline passed: GOAWAY and close (NO_ERROR when merely idle)."""
        if self._closed or self.transport is None:
            return
        code = ErrorCode.NO_ERROR if why == "idle" else ErrorCode.PROTOCOL_ERROR
        if self._preface or why == "idle":
            self.transport.write(f.goaway(self._last_id, code, why.encode()))
        self._abandon()
        self.transport.close()

    def _calm(self, budget: Budget, what: str) -> None:
        """Spend one token of ``budget``; a flood past it is a connection error."""
        deadlines = self._deadlines
        if deadlines is not None and not budget.spend(deadlines.now()):
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, f"too many {what}")

    def _owe_control(self) -> None:
        """Count an ack or reset the client made us owe; too many unsent is a flood."""
        self._control += 1
        if self._control > self._limits.max_queued_control:
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames queued")
