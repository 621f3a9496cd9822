"""Kafka through confluent-kafka: a consumer group in, an idempotent producer out.

``kafka://broker:9092[,broker2:9092]/TOPIC``. Offsets are committed by hand, and
only up to the first message of each partition whose result (or dead letter) the
brokers have not yet acknowledged: a consumer that dies re-reads from there, so a
message may be scored twice (same ``id``), never lost. Kafka keeps no delivery
count, so a message refused for a passing reason (5xx) is delivered again by this
consumer (attempt + 1) until ``max_deliveries``, then dead-lettered; offsets
after it wait for it. librdkafka blocks, so its calls run in one worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from inferline.errors import Unavailable
from inferline.streaming.consumer import DeadLetter, Result
from inferline.streaming.messages import Delivery, result_document

__all__ = ["KafkaBroker", "kafka_status", "parse_kafka_url"]

logger = logging.getLogger(__name__)


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/TOPIC`` → (bootstrap servers, topic)."""
    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic:
        raise ValueError(f"{url!r} is not kafka://host:port/TOPIC")
    return parts.netloc, topic


class KafkaBroker:
    """One member of a Kafka consumer group, with an idempotent producer for results."""

    def __init__(
        self,
        bootstrap: str,
        source: str,
        sink: str,
        dead_letter: str,
        group: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.source = source
        self.sink = sink
        self.dead_letter = dead_letter
        self.group = group
        self.extra = dict(extra or {})
        self._consumer: Any = None
        self._producer: Any = None
        self._thread: ThreadPoolExecutor | None = None
        #: Per partition: offsets read and not settled, and the highest settled + 1.
        self._open: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        self._retry: deque[Delivery] = deque()

    async def start(self) -> None:
        from confluent_kafka import Consumer, Producer

        common = {"bootstrap.servers": self.bootstrap, **self.extra}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inferline-kafka")
        self._consumer = Consumer(
            {
                **common,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._producer = Producer({**common, "enable.idempotence": True, "acks": "all"})
        await self._call(self._consumer.subscribe, [self.source], on_revoke=self._revoked)

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:  # another member owns them now: it re-reads what is open
            self._open.pop(tp.partition, None)
            self._next.pop(tp.partition, None)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 30)
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        if self._retry:
            batch = [self._retry.popleft() for _ in range(min(count, len(self._retry)))]
            for delivery in batch:
                delivery.attempts += 1
            return batch
        messages = await self._call(self._consumer.consume, count, block_ms / 1000)
        deliveries = []
        for msg in messages:
            if msg.error() is not None:
                logger.warning("kafka: %s", msg.error())
                continue
            partition, offset = msg.partition(), msg.offset()
            self._open.setdefault(partition, set()).add(offset)
            kind, stamp = msg.timestamp()
            produced = stamp / 1000 if kind and stamp > 0 else None
            deliveries.append(
                Delivery(msg, msg.value() or b"", 1, f"{partition}:{offset}", produced)
            )
        return deliveries

    async def settle(
        self, results: list[Result], dead: list[DeadLetter], retry: list[Delivery]
    ) -> None:
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        settled: list[Delivery] = []
        for topic, items in (
            (self.sink, [(r.delivery, r.id, r.fields) for r in results]),
            (self.dead_letter, [(d.delivery, d.fields["id"], d.fields) for d in dead]),
        ):
            for delivery, key, fields in items:
                done: asyncio.Future[None] = loop.create_future()
                waits.append(done)
                settled.append(delivery)
                self._producer.produce(
                    topic, result_document(fields), key=key, on_delivery=_resolver(loop, done)
                )
        # Kafka cannot leave one message unacknowledged: these come back from fetch.
        self._retry.extend(retry)
        if waits:
            await asyncio.to_thread(self._producer.flush, 30)
            await asyncio.gather(*waits)
        for delivery in settled:
            msg = delivery.ref
            self._open.get(msg.partition(), set()).discard(msg.offset())
            self._next[msg.partition()] = max(self._next.get(msg.partition(), 0), msg.offset() + 1)
        await self._commit()

    async def _commit(self) -> None:
        from confluent_kafka import TopicPartition

        offsets = []
        for partition, upto in self._next.items():
            still_open = self._open.get(partition)
            commit = min(min(still_open), upto) if still_open else upto
            offsets.append(TopicPartition(self.source, partition, commit))
        if offsets:
            await self._call(self._consumer.commit, offsets=offsets, asynchronous=False)

    async def backlog(self) -> tuple[int | None, int | None]:
        pending = sum(len(v) for v in self._open.values())
        return None, pending


def _resolver(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> Any:
    def on_delivery(error: Any, _msg: Any) -> None:
        def resolve() -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(Unavailable(f"kafka did not take the result: {error}"))
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(resolve)

    return on_delivery


def kafka_status(
    bootstrap: str, topic: str, group: str, dead_letter: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``stream status`` report for Kafka (blocking): messages kept on the source
    topic, the group's lag (high watermark minus committed offset, summed over the
    partitions), its members, and the messages on the dead-letter topic. Kafka has
    no per-message acknowledgement, so ``pending`` is None."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, **(extra or {}), "group.id": group,
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        topics = consumer.list_topics(timeout=10).topics
        if topic not in topics or topics[topic].error is not None:
            raise ValueError(f"kafka topic {topic!r} does not exist")
        partitions = [TopicPartition(topic, p) for p in sorted(topics[topic].partitions)]
        length = lag = 0
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            length += high - low
            lag += high - (tp.offset if tp.offset >= 0 else low)
        dead = 0
        if dead_letter in topics and topics[dead_letter].error is None:
            for p in topics[dead_letter].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(dead_letter, p), timeout=10
                )
                dead += high - low
    except KafkaException as exc:
        raise OSError(f"kafka: {exc}") from exc
    finally:
        consumer.close()
    return {
        "stream": topic,
        "length": length,
        "groups": [{"name": group, "lag": lag, "pending": None, "consumers": []}],
        "dead_letters": dead,
    }
