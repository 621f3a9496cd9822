"""Assemble a consumer from settings and run it until told to stop.

``run`` builds the broker from the source and sink URLs, the scorer (embedded,
or the enricher with ``--enrich``), the stream metrics and their endpoint, then
runs the loop; when ``stop`` is set it stops reading, scores and settles what is
in flight, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from inferline.monitoring.metrics import StreamMetrics
from inferline.settings import Settings, StreamSettings
from inferline.streaming.consumer import Broker, Consumer, Scorer
from inferline.streaming.redis import RedisBroker, parse_stream_url

__all__ = ["build_broker", "build_scorer", "default_consumer", "run"]

logger = logging.getLogger(__name__)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build_broker(config: StreamSettings) -> Broker:
    """The broker the source URL names; the sink must be on the same one."""
    if not config.source or not config.sink:
        raise ValueError("a stream needs --source and --sink")
    scheme = config.source.partition("://")[0]
    if scheme != config.sink.partition("://")[0]:
        raise ValueError("--source and --sink must be on the same kind of broker")
    consumer = config.consumer or default_consumer()
    if scheme in ("redis", "rediss", "unix"):
        source, sink = parse_stream_url(config.source), parse_stream_url(config.sink)
        if source.server != sink.server:
            raise ValueError(
                "--source and --sink must be on the same Redis: the result is written and "
                "the input acknowledged in one atomic step"
            )
        return RedisBroker(
            source.server,
            source.stream,
            sink.stream,
            config.dead_letter or f"{source.stream}-dead",
            config.group,
            consumer,
            claim_idle_ms=config.claim_idle_ms,
            results_key=config.results_key,
            ttl_seconds=config.ttl_seconds,
            id_field=config.id_field,
        )
    if scheme in ("nats", "tls"):
        from inferline.streaming.nats import NatsBroker, parse_nats_url

        server, subject = parse_nats_url(config.source)
        sink_server, sink_subject = parse_nats_url(config.sink)
        if server != sink_server:
            raise ValueError("--source and --sink must be on the same NATS server")
        return NatsBroker(
            server,
            subject,
            sink_subject,
            config.dead_letter or f"{subject}-dead",
            config.group,
            max_deliveries=config.max_deliveries,
            ack_wait_ms=config.claim_idle_ms,
        )
    if scheme == "kafka":
        from inferline.streaming.kafka import KafkaBroker, parse_kafka_url

        bootstrap, topic = parse_kafka_url(config.source)
        sink_bootstrap, sink_topic = parse_kafka_url(config.sink)
        if bootstrap != sink_bootstrap:
            raise ValueError("--source and --sink must be on the same Kafka cluster")
        return KafkaBroker(
            bootstrap,
            topic,
            sink_topic,
            config.dead_letter or f"{topic}-dead",
            config.group,
            extra=config.kafka_options,
        )
    raise ValueError(f"unsupported stream URL scheme {scheme!r}; use redis://, nats:// or kafka://")


def build_scorer(settings: Settings, model: str) -> Scorer:
    config = settings.stream
    if config.enrich:
        from inferline.streaming.enricher import EnricherScorer

        return EnricherScorer(config, model)
    from inferline.streaming.embedded import EmbeddedScorer

    return EmbeddedScorer(settings, model, config.version)


async def run(settings: Settings, model: str, stop: asyncio.Event) -> None:
    """Consume until ``stop`` is set, then drain: in-flight batches are settled first."""
    config = settings.stream
    broker = build_broker(config)
    scorer = build_scorer(settings, model)
    registry: Any = getattr(scorer, "metrics_registry", None)
    metrics: StreamMetrics | None = None
    if settings.metrics:
        if registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
        metrics = StreamMetrics(registry, model)
    await scorer.start()
    endpoint = None
    refresher: asyncio.Task[None] | None = None
    try:
        await broker.start()
        if metrics is not None and config.metrics_port is not None:
            from prometheus_client import start_http_server

            endpoint = start_http_server(config.metrics_port, settings.host, registry)
            logger.info(
                "stream metrics on http://%s:%d/metrics", settings.host, config.metrics_port
            )
        if metrics is not None:
            refresher = asyncio.create_task(
                _refresh(broker, metrics, settings.metrics_refresh_seconds),
                name="inferline-stream-backlog",
            )
        consumer = Consumer(
            broker, scorer, model, config, max_elements=settings.max_elements, metrics=metrics
        )
        logger.info("consuming %s for model %s", config.source, model)
        await consumer.run(stop)
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        if endpoint is not None:
            server, thread = endpoint
            server.shutdown()
            thread.join()
        await broker.close()
        await scorer.stop()


async def _refresh(broker: Broker, metrics: StreamMetrics, every: float) -> None:
    while True:
        try:
            lag, pending = await broker.backlog()
            metrics.backlog(lag, pending)
        except Exception:  # broker briefly unreachable: the next sample tries again
            logger.debug("stream backlog unreadable", exc_info=True)
        await asyncio.sleep(every)
