"""The consumer loop every broker and both patterns share.

Read a micro-batch (up to ``batch_size`` messages, waiting at most ``linger_ms``
for it to fill once the first has arrived), parse each message, score the good
ones in one model call, then hand the broker the results and the dead letters to
write *and* the messages to acknowledge, in one step. A message is acknowledged
only in that step, after its result or dead letter is written: a consumer that
dies before it leaves the message pending, and another consumer claims it.

At most ``max_inflight_batches`` batches are open at once; reading pauses until
one settles. A message that cannot be parsed, fails validation (any 4xx) or has
been delivered more than ``max_deliveries`` times goes to the dead letter with
the error, the attempt count and the original payload. A batch the model could
not score for a passing reason (503, a model error) is left pending and comes
back. Nothing a message holds stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from inferline.errors import InferlineError, PayloadTooLarge
from inferline.monitoring.metrics import StreamMetrics
from inferline.settings import StreamSettings, TensorSpec
from inferline.streaming.messages import (
    Delivery,
    Parsed,
    Scored,
    encode_result,
    parse_document,
    parse_fields,
)

__all__ = ["Broker", "Consumer", "DeadLetter", "Result", "Scorer"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Result:
    delivery: Delivery
    #: The result's fields (outputs JSON-encoded).
    fields: dict[str, str]
    #: The message id (for ``--results-key``).
    id: str


@dataclass(slots=True)
class DeadLetter:
    delivery: Delivery
    #: ``id``, ``error`` (``{"error": …}``), ``attempts``, ``source_id``, ``payload``.
    fields: dict[str, str]
    #: Why, for the metric label: ``malformed``, ``invalid``, ``deliveries``, ``too_large``.
    reason: str


class Scorer(Protocol):
    """Scores parsed messages: the model in process, or a call to the serving API."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def signature(self) -> Sequence[TensorSpec] | None:
        """The inputs of the version messages are scored with now (None: not known)."""

    async def score(self, items: Sequence[Parsed]) -> list[Scored | InferlineError]:
        """One answer per item, in order: its outputs, or the error that refused it."""


class Broker(Protocol):
    """Where messages come from and results go (Redis Streams, NATS, Kafka)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` messages, waiting at most ``block_ms`` for the first (0: none)."""

    async def settle(
        self, results: list[Result], dead: list[DeadLetter], retry: list[Delivery]
    ) -> None:
        """Write the results and dead letters and acknowledge their messages; ``retry``
        (refused for a passing reason) is left unacknowledged, to be delivered again."""

    async def backlog(self) -> tuple[int | None, int | None]:
        """(lag, pending) of the group, for the gauges."""


class Consumer:
    """Runs the loop until ``stop`` is set, then finishes and settles what it read."""

    def __init__(
        self,
        broker: Broker,
        scorer: Scorer,
        model: str,
        config: StreamSettings,
        *,
        max_elements: int,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.broker = broker
        self.scorer = scorer
        self.model = model
        self.config = config
        self.max_elements = max_elements
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        slots = asyncio.Semaphore(self.config.max_inflight_batches)
        try:
            while not stop.is_set():
                await slots.acquire()
                try:
                    batch = await self._collect(stop)
                except Exception:  # broker unreachable: wait, then read again
                    slots.release()
                    logger.exception("reading from the source failed")
                    if self.metrics is not None:
                        self.metrics.failed("read")
                    await _sleep_unless(stop, 1.0)
                    continue
                if not batch:
                    slots.release()
                    continue
                task = asyncio.create_task(self._handle(batch), name="inferline-stream-batch")
                self._tasks.add(task)
                task.add_done_callback(lambda t: self._done(t, slots))
        finally:
            # Drain: what was read is scored and settled before the loop returns.
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None], slots: asyncio.Semaphore) -> None:
        self._tasks.discard(task)
        slots.release()
        if self.metrics is not None:
            self.metrics.inflight.labels(self.model).set(len(self._tasks))
        if not task.cancelled() and task.exception() is not None:
            logger.error("a stream batch failed", exc_info=task.exception())
            if self.metrics is not None:
                self.metrics.failed("settle")

    async def _collect(self, stop: asyncio.Event) -> list[Delivery]:
        size = self.config.batch_size
        batch = await self.broker.fetch(size, self.config.block_ms)
        if not batch or len(batch) >= size or self.config.linger_ms <= 0:
            return batch
        # The linger is kept here, not by a short blocking read: Redis checks blocked
        # reads' timeouts only every few milliseconds or more (a 2 ms linger took 10).
        await _sleep_unless(stop, self.config.linger_ms / 1000)
        batch.extend(await self.broker.fetch(size - len(batch), 0))
        return batch

    async def _handle(self, batch: list[Delivery]) -> None:
        if self.metrics is not None:
            self.metrics.inflight.labels(self.model).set(len(self._tasks))
        dead: list[DeadLetter] = []
        todo: list[tuple[Delivery, Parsed]] = []
        specs: Sequence[TensorSpec] | None = None
        try:
            specs = self.scorer.signature()
        except InferlineError as exc:  # model not loaded (yet): everything comes back later
            logger.warning("cannot score %d messages: %s", len(batch), exc.message)
            await self.broker.settle([], [], batch)
            self._count(len(batch), [], [], len(batch))
            return
        for delivery in batch:
            if delivery.attempts > self.config.max_deliveries:
                error = (
                    f"delivered {delivery.attempts} times; the limit is "
                    f"{self.config.max_deliveries}"
                )
                dead.append(self._dead(delivery, error, "deliveries"))
                continue
            try:
                todo.append((delivery, self._parse(delivery, specs)))
            except PayloadTooLarge as exc:
                dead.append(self._dead(delivery, exc.message, "too_large"))
            except InferlineError as exc:
                dead.append(self._dead(delivery, exc.message, "malformed"))
        results: list[Result] = []
        retry: list[Delivery] = []
        if todo:
            try:
                answers = await self.scorer.score([parsed for _, parsed in todo])
            except InferlineError as exc:
                answers = [exc] * len(todo)
            for (delivery, parsed), answer in zip(todo, answers, strict=True):
                if isinstance(answer, Scored):
                    fields = encode_result(self.model, parsed, answer)
                    results.append(Result(delivery, fields, parsed.id))
                elif not _passing(answer):
                    dead.append(self._dead(delivery, answer.message, "invalid", parsed.id))
                else:
                    retry.append(delivery)
            if retry:
                logger.warning("%d messages left pending to retry", len(retry))
        await self.broker.settle(results, dead, retry)
        self._count(len(batch), results, dead, len(retry))

    def _count(
        self, size: int, results: list[Result], dead: list[DeadLetter], retried: int
    ) -> None:
        if self.metrics is None:
            return
        reasons: dict[str, int] = {}
        for letter in dead:
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        now = time.time()
        latencies = [now - r.delivery.produced for r in results if r.delivery.produced is not None]
        self.metrics.settled(size, len(results), reasons, retried, latencies)

    def _parse(self, delivery: Delivery, specs: Sequence[TensorSpec] | None) -> Parsed:
        payload = delivery.payload
        limit = self.config.max_message_bytes
        if isinstance(payload, bytes | str):
            if len(payload) > limit:
                raise PayloadTooLarge(f"the message has {len(payload)} bytes; the limit is {limit}")
            return parse_document(
                payload,
                specs,
                id_field=self.config.id_field,
                fallback_id=delivery.broker_id,
                max_elements=self.max_elements,
            )
        size = sum(len(k) + len(v) for k, v in payload.items())
        if size > limit:
            raise PayloadTooLarge(f"the message has {size} bytes; the limit is {limit}")
        return parse_fields(
            payload,
            specs,
            id_field=self.config.id_field,
            payload_field=self.config.payload_field,
            fallback_id=delivery.broker_id,
            max_elements=self.max_elements,
        )

    def _dead(
        self, delivery: Delivery, error: str, reason: str, message_id: str | None = None
    ) -> DeadLetter:
        payload = delivery.payload
        if isinstance(payload, bytes):
            original = payload.decode(errors="replace")
        elif isinstance(payload, str):
            original = payload
        else:
            original = orjson.dumps(dict(payload)).decode()
        if message_id is None:
            message_id = _message_id(delivery, self.config.id_field)
        fields = {
            "id": message_id,
            "error": orjson.dumps({"error": error}).decode(),
            "attempts": str(delivery.attempts),
            "source_id": delivery.broker_id,
            "payload": original,
        }
        return DeadLetter(delivery, fields, reason)


#: Refusals that say nothing about the message: not loaded (yet), busy, out of time.
_PASSING = frozenset({404, 408, 429})


def _passing(error: InferlineError) -> bool:
    """Would the same message be scored later? Then it is retried, not dead-lettered."""
    return error.http_status >= 500 or error.http_status in _PASSING


def _message_id(delivery: Delivery, id_field: str) -> str:
    """The id a dead message carried, if it can be read at all; else the broker's."""
    payload = delivery.payload
    if isinstance(payload, bytes | str):
        try:
            doc: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return delivery.broker_id
        value = doc.get(id_field) if isinstance(doc, dict) else None
        return str(value) if isinstance(value, str | int) else delivery.broker_id
    return payload.get(id_field, delivery.broker_id)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
