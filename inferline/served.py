"""One loaded model version and how a request reaches it.

Straight to the runtime, or through its batcher; bounded by its timeout; with
its prediction cache and the count of requests in flight that lets an old
version drain before it is unloaded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from inferline.batching import Batcher, BatchObserver
from inferline.cache import PredictionCache
from inferline.errors import DeadlineExceeded
from inferline.runtimes.base import Inputs, Model, Outputs, count_rows

__all__ = ["ServedModel"]


@dataclass(slots=True)
class ServedModel:
    """One loaded model version and how requests reach it (batched or not)."""

    model: Model
    batcher: Batcher | None
    timeout: float | None
    #: Requests inside :meth:`DataPlane.infer` right now; an old version drains to 0.
    inflight: int = 0
    #: Set once the version is retired and its last in-flight request has finished.
    drained: asyncio.Event | None = None
    #: Told about unbatched model calls (batched ones report through the batcher).
    on_call: BatchObserver | None = None
    cache: PredictionCache | None = None
    #: Hash of the signature: part of every cache key, so a changed signature never hits.
    signature: bytes = b""

    async def call(self, inputs: Inputs) -> Outputs:
        run: Awaitable[Outputs]
        if self.batcher is not None:
            run = self.batcher.submit(inputs)
        elif self.on_call is not None:
            if self.timeout is None:  # the common case, without a coroutine in between
                began = time.perf_counter()
                outputs = await self.model.infer(inputs)
                self.on_call(count_rows(inputs), time.perf_counter() - began, _NO_WAIT)
                return outputs
            run = self._timed(inputs, self.on_call)
        else:
            run = self.model.infer(inputs)
        if self.timeout is None:
            return await run
        try:
            return await asyncio.wait_for(run, self.timeout)
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"model {self.model.name!r} did not answer within {self.timeout * 1000:g} ms"
            ) from exc

    async def _timed(self, inputs: Inputs, on_call: BatchObserver) -> Outputs:
        began = time.perf_counter()
        outputs = await self.model.infer(inputs)
        on_call(count_rows(inputs), time.perf_counter() - began, _NO_WAIT)
        return outputs


#: An unbatched call waited for no batch (observers only read it).
_NO_WAIT = [0.0]
