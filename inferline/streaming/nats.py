"""NATS JetStream: a durable pull consumer in, JetStream-published results out.

``nats://host:port/SUBJECT``. The source, sink and dead-letter subjects each get a
JetStream stream if none covers them yet (named after the subject). A message is
acked only after its result (or dead letter) is published and JetStream has
acknowledged storing it. Each result carries ``Nats-Msg-Id`` = the input's stream
sequence, so JetStream drops a second publish of it within the sink stream's
duplicate window (a crash between publish and ack). The consumer's ``max_deliver``
is one above ``--max-deliveries``: the delivery past the limit reaches the loop,
which dead-letters it; ``ack_wait`` is ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any
from urllib.parse import urlsplit

from inferline.streaming.consumer import DeadLetter, Result
from inferline.streaming.messages import Delivery, result_document

__all__ = ["NatsBroker", "nats_status", "parse_nats_url"]


def parse_nats_url(url: str) -> tuple[str, str]:
    """``nats://host:port/SUBJECT`` → (server URL, subject)."""
    parts = urlsplit(url)
    subject = parts.path.lstrip("/")
    if parts.scheme not in ("nats", "tls") or not subject:
        raise ValueError(f"{url!r} is not nats://host:port/SUBJECT")
    return f"{parts.scheme}://{parts.netloc}", subject


def _stream_name(subject: str) -> str:
    return "INFERLINE_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)


class NatsBroker:
    """One member of a durable JetStream pull consumer."""

    def __init__(
        self,
        server: str,
        source: str,
        sink: str,
        dead_letter: str,
        durable: str,
        *,
        max_deliveries: int,
        ack_wait_ms: int,
    ) -> None:
        self.server = server
        self.source = source
        self.sink = sink
        self.dead_letter = dead_letter
        self.durable = durable
        self.max_deliveries = max_deliveries
        self.ack_wait_ms = ack_wait_ms
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._stream = ""

    async def start(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        self._nc = await nats.connect(self.server)
        self._js = self._nc.jetstream()
        self._stream = await self._ensure_stream(self.source)
        await self._ensure_stream(self.sink)
        await self._ensure_stream(self.dead_letter)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=self.max_deliveries + 1,
            ack_wait=self.ack_wait_ms / 1000,
            max_ack_pending=-1,
        )
        self._sub = await self._js.pull_subscribe(
            self.source, durable=self.durable, stream=self._stream, config=config
        )

    async def _ensure_stream(self, subject: str) -> str:
        from nats.js.errors import NotFoundError

        try:
            name: str = await self._js.find_stream_name_by_subject(subject)
            return name
        except NotFoundError:
            name = _stream_name(subject)
            await self._js.add_stream(name=name, subjects=[subject])
            return name

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            messages = await self._sub.fetch(count, timeout=max(block_ms, 5) / 1000)
        except (TimeoutError, NatsTimeout):
            return []
        deliveries = []
        for msg in messages:
            meta = msg.metadata
            produced = meta.timestamp.timestamp() if meta.timestamp is not None else None
            deliveries.append(
                Delivery(msg, msg.data, meta.num_delivered, str(meta.sequence.stream), produced)
            )
        return deliveries

    async def settle(
        self, results: list[Result], dead: list[DeadLetter], retry: list[Delivery]
    ) -> None:
        publishes = [
            self._publish(self.sink, r.delivery, result_document(r.fields)) for r in results
        ]
        publishes += [
            self._publish(self.dead_letter, d.delivery, result_document(d.fields)) for d in dead
        ]
        await asyncio.gather(*publishes)
        await asyncio.gather(*(r.delivery.ref.ack_sync() for r in results))
        await asyncio.gather(*(d.delivery.ref.ack_sync() for d in dead))
        await asyncio.gather(*(delivery.ref.nak() for delivery in retry))

    async def _publish(self, subject: str, delivery: Delivery, body: bytes) -> None:
        headers = {"Nats-Msg-Id": f"{self._stream}:{delivery.broker_id}"}
        await self._js.publish(subject, body, headers=headers)

    async def backlog(self) -> tuple[int | None, int | None]:
        info = await self._js.consumer_info(self._stream, self.durable)
        return info.num_pending, info.num_ack_pending


async def nats_status(
    server: str, subject: str, group: str | None, dead_letter: str
) -> dict[str, Any]:
    """The ``stream status`` report for JetStream: messages on the source subject, each
    durable consumer's lag (not yet delivered) and pending (delivered, not acked), and
    the messages on the dead-letter subject."""
    import nats
    from nats.js.errors import NotFoundError

    try:
        nc = await nats.connect(server, allow_reconnect=False, connect_timeout=5)
    except (nats.errors.Error, TimeoutError) as exc:
        raise OSError(f"nats: cannot reach {server}: {exc}") from exc
    try:
        js = nc.jetstream()
        try:
            stream = await js.find_stream_name_by_subject(subject)
        except NotFoundError as exc:
            raise ValueError(f"no JetStream stream holds subject {subject!r}") from exc
        report: dict[str, Any] = {
            "stream": subject,
            "length": await _subject_count(js, stream, subject),
            "groups": [],
            "dead_letters": 0,
        }
        with contextlib.suppress(NotFoundError):
            dead_stream = await js.find_stream_name_by_subject(dead_letter)
            report["dead_letters"] = await _subject_count(js, dead_stream, dead_letter)
        for info in await js.consumers_info(stream):
            name = info.config.durable_name or info.name
            if group is not None and name != group:
                continue
            report["groups"].append(
                {
                    "name": name,
                    "lag": info.num_pending,
                    "pending": info.num_ack_pending,
                    "redelivered": info.num_redelivered,
                    "consumers": [],
                }
            )
        return report
    finally:
        await nc.close()


async def _subject_count(js: Any, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    subjects = info.state.subjects or {}
    return int(subjects.get(subject, 0)) if subjects else 0
