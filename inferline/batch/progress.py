"""How a batch job shows progress: a Rich bar on a terminal, plain lines elsewhere.

Logs and CI capture plain lines; a bar redrawn in place would be noise there.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "make_progress"]


class Progress:
    """Silent by default; subclasses show something."""

    def start(self, total: int | None, done: int = 0) -> None:
        self.total, self.done, self.rejected = total, done, 0
        self.started = time.monotonic()
        self.first = done

    def advance(self, rows: int, rejected: int) -> None:
        self.done += rows
        self.rejected += rejected

    def close(self) -> None:
        return None

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.first) / elapsed if elapsed > 0 else 0.0


class Lines(Progress):
    """A line every ``interval`` seconds and a last one at the end."""

    def __init__(self, label: str, stream: TextIO, interval: float) -> None:
        self.label, self.stream, self.interval = label, stream, interval

    def start(self, total: int | None, done: int = 0) -> None:
        super().start(total, done)
        self.last = self.started

    def advance(self, rows: int, rejected: int) -> None:
        super().advance(rows, rejected)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        rate = self.rate()
        parts = [f"{self.label}: {self.done:,} rows"]
        if self.total:
            parts[0] += f" of {self.total:,} ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:,.0f} rows/s")
        if self.total and rate > 0:
            parts.append(f"ETA {max(self.total - self.done, 0) / rate:.0f}s")
        parts.append(f"{self.rejected:,} rejected")
        print(", ".join(parts), file=self.stream, flush=True)


class Bar(Progress):
    """Rich's bar: rows, rows/s and time left."""

    def __init__(self, label: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.label = label
        self._bar: Any = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rejected]} rejected"),
            transient=False,
        )

    def start(self, total: int | None, done: int = 0) -> None:
        super().start(total, done)
        self._bar.start()
        self._task = self._bar.add_task(
            self.label, total=total, completed=done, rate="0", rejected="0"
        )

    def advance(self, rows: int, rejected: int) -> None:
        super().advance(rows, rejected)
        self._bar.update(
            self._task,
            advance=rows,
            rate=f"{self.rate():,.0f}",
            rejected=f"{self.rejected:,}",
        )

    def close(self) -> None:
        self._bar.stop()


def make_progress(show: bool | None, label: str, interval: float = 10.0) -> Progress:
    """``show``: True or False, or None to decide by whether stderr is a terminal."""
    if show is False:
        return Progress()
    if sys.stderr.isatty():
        return Bar(label)
    return Lines(label, sys.stderr, interval)
