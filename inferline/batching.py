"""Per-model dynamic batching: many small requests become a few large model calls.

Models are far cheaper per row on a batch than on one row at a time, so each
batched model gets one queue. A background loop takes the oldest request, waits
up to ``max_queue_delay_ms`` (from that request's arrival, on ``time.monotonic``)
for company, merges rows along the first dimension, runs the model once and
splits the outputs back by row offset. Requests only share a batch when their
inputs agree on names, dtypes and trailing shapes, so ``np.concatenate`` can
never mix them up; the others wait in a queue of their own.

Each request is a future. The batch (result or the model's exception),
``stop()`` (``ModelNotReady``) or the loop's done-callback (``InternalError``)
settles it, so no caller hangs. A client that gives up cancels its future: the
loop drops it before the batch runs, or a running batch discards that result.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inferline.errors import InternalError, InvalidInput, ModelNotReady, QueueFull
from inferline.runtimes.base import AsyncPredict, Inputs, Outputs
from inferline.settings import BatchingSettings

__all__ = ["Batcher"]

logger = logging.getLogger(__name__)

#: Told about each model call: rows, compute seconds, each request's queue wait.
BatchObserver = Callable[[int, float, list[float]], None]

#: Input names, dtypes and trailing shapes: requests with equal keys can be merged.
_Key = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(slots=True, eq=False)
class _Request:
    inputs: Inputs
    rows: int
    key: _Key
    arrived: float
    future: asyncio.Future[Outputs]
    queued: bool = True  # counted in queue_depth; see _take


class Batcher:
    """Queues one model's requests and runs them in merged batches."""

    def __init__(
        self,
        predict: AsyncPredict,
        settings: BatchingSettings,
        name: str,
        on_batch: BatchObserver | None = None,
    ) -> None:
        # Only stores: asyncio primitives belong to the loop that runs start().
        self._predict = predict
        self._on_batch = on_batch
        self._settings = settings
        self.name = name
        self._state: Literal["new", "running", "stopped", "crashed"] = "new"
        self._queues: dict[_Key, deque[_Request]] = {}
        self._depth = 0
        self._forming: list[_Request] = []
        self._running: set[asyncio.Task[None]] = set()
        self._last_batch_rows = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (cancelled ones excluded)."""
        return self._depth

    @property
    def last_batch_rows(self) -> int:
        """Rows in the most recent batch sent to the model."""
        return self._last_batch_rows

    async def start(self) -> None:
        if self._settings.max_batch_size < 1:
            raise ValueError(f"{self.name}: batching needs max_batch_size >= 1")
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self._settings.max_concurrent_batches)
        self._task = asyncio.create_task(self._run(), name=f"inferline-batching-{self.name}")
        self._task.add_done_callback(self._loop_done)
        self._state = "running"

    async def stop(self) -> None:
        """Refuse new work, fail queued requests, let running batches finish."""
        if self._state == "new":
            self._state = "stopped"
            return
        self._state = "stopped"
        self._task.cancel()
        await asyncio.wait([self._task])  # never raises the task's exception
        self._fail_pending(lambda: ModelNotReady(f"model {self.name!r} is unloading"))
        if self._running:
            await asyncio.wait(self._running)

    async def submit(self, inputs: Inputs) -> Outputs:
        """Queue one request and return its own rows of the batch outputs.

        The queue limit is checked once per request, so an oversized request is
        admitted whole (its pieces may pass the limit) rather than refused forever.
        """
        if self._state == "crashed":
            raise InternalError(f"batching for model {self.name!r} failed; see the server log")
        if self._state != "running":
            raise ModelNotReady(f"model {self.name!r} is not accepting requests")
        if self._depth >= self._settings.max_queue_size:
            raise QueueFull(
                f"model {self.name!r} has {self._settings.max_queue_size} requests queued "
                "(max_queue_size); retry shortly"
            )
        rows, key = _describe(inputs)
        size = self._settings.max_batch_size
        pieces: list[tuple[Inputs, int]] = [(inputs, rows)]
        if rows > size:  # too big for one batch: queue it in pieces, stitch the outputs back
            pieces = [
                ({k: v[i : i + size] for k, v in inputs.items()}, min(size, rows - i))
                for i in range(0, rows, size)
            ]
        now, loop = time.monotonic(), asyncio.get_running_loop()
        requests = [_Request(p, n, key, now, loop.create_future()) for p, n in pieces]
        self._queues.setdefault(key, deque()).extend(requests)
        self._depth += len(requests)
        self._arrived.set()
        try:
            parts = [await r.future for r in requests]
        finally:
            for r in requests:  # on cancel or a failed chunk, release the other chunks too
                r.future.cancel()
                if r.future.cancelled():
                    self._take(r)
                else:
                    r.future.exception()  # mark retrieved: asyncio must not log it again
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # -- the loop --------------------------------------------------------------------
    def _take(self, request: _Request) -> None:
        """Leave the queue count exactly once, whoever (loop or canceller) sees it first."""
        if request.queued:
            request.queued = False
            self._depth -= 1

    async def _run(self) -> None:
        while True:
            while self._depth == 0:
                self._arrived.clear()
                await self._arrived.wait()
            # Take a slot first, so the batch keeps growing while the model is busy.
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _oldest(self) -> deque[_Request] | None:
        """The group whose head waited longest (FIFO across groups); drops cancelled heads."""
        best: deque[_Request] | None = None
        for key, queue in list(self._queues.items()):
            while queue and queue[0].future.done():
                self._take(queue.popleft())
            if not queue:
                del self._queues[key]
            elif best is None or queue[0].arrived < best[0].arrived:
                best = queue
        return best

    async def _collect(self) -> list[_Request]:
        """Form one batch from the oldest request's group, waiting its delay for company."""
        queue = self._oldest()
        if queue is None:
            return []
        first = queue.popleft()
        self._take(first)
        self._forming = batch = [first]
        rows, limit = first.rows, self._settings.max_batch_size
        deadline = first.arrived + self._settings.max_queue_delay_ms / 1000
        while True:
            while queue:
                head = queue[0]
                if not head.future.done():
                    if rows + head.rows > limit:
                        break  # it starts the next batch
                    batch.append(head)
                    rows += head.rows
                self._take(queue.popleft())
            remaining = deadline - time.monotonic()
            if queue or rows >= limit or remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        self._forming = []
        return batch

    async def _run_batch(self, batch: list[_Request]) -> None:
        try:
            live = [r for r in batch if not r.future.done()]  # cancelled since it was taken
            if not live:
                return
            self._last_batch_rows = total = sum(r.rows for r in live)
            began = time.monotonic()
            try:
                if len(live) == 1:
                    outputs = await self._predict(live[0].inputs)  # zero-copy fast path
                else:
                    names = live[0].inputs
                    merged = {k: np.concatenate([r.inputs[k] for r in live]) for k in names}
                    outputs = await self._predict(merged)
                parts = self._split(outputs, live, total)
                if self._on_batch is not None:
                    waits = [began - r.arrived for r in live]
                    self._on_batch(total, time.monotonic() - began, waits)
            except Exception as exc:  # noqa: BLE001 - fails this batch only, never the loop
                for r in live:  # the same exception: the dataplane translates it once
                    if not r.future.done():
                        r.future.set_exception(exc)
                return
            for r, part in zip(live, parts, strict=True):
                if not r.future.done():  # a client cancelled while running: discard
                    r.future.set_result(part)
        finally:
            self._slots.release()
            _fail(batch, lambda: ModelNotReady(f"model {self.name!r} stopped before answering"))

    def _split(self, outputs: Outputs, live: list[_Request], total: int) -> list[Outputs]:
        """Each request's rows of the outputs, after checking every output has ``total`` rows."""
        for out_name, value in outputs.items():
            got = np.shape(value)[:1]
            if got != (total,):
                raise InternalError(
                    f"model {self.name!r} returned {got[0] if got else 'no'} rows in output "
                    f"{out_name!r} for {total} input rows"
                )
        if len(live) == 1:
            return [outputs]
        offsets = itertools.accumulate((r.rows for r in live), initial=0)
        return [{k: v[a:b] for k, v in outputs.items()} for a, b in itertools.pairwise(offsets)]

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("batch of %s failed", self.name, exc_info=task.exception())

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        """A crashed loop must not leave callers waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        logger.error("batching loop of %s crashed", self.name, exc_info=task.exception())
        self._state = "crashed"
        self._fail_pending(lambda: InternalError(f"batching for model {self.name!r} failed"))

    def _fail_pending(self, error: Callable[[], Exception]) -> None:
        pending = [r for queue in self._queues.values() for r in queue] + self._forming
        for r in pending:
            self._take(r)
        _fail(pending, error)
        self._queues.clear()
        self._forming = []


def _fail(requests: list[_Request], error: Callable[[], Exception]) -> None:
    """Set ``error()`` on every request still waiting (cancelled ones are skipped)."""
    for r in requests:
        if not r.future.done():
            r.future.set_exception(error())


def _describe(inputs: Inputs) -> tuple[int, _Key]:
    """Rows and merge key of a request; refuse what would corrupt a merged batch."""
    dims = {np.shape(v)[:1] for v in inputs.values()}
    if len(dims) > 1 or () in dims:
        raise InvalidInput("every input needs the same first (batch) dimension to be batched")
    rows = next(iter(dims))[0] if dims else 0
    key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
    return rows, key
