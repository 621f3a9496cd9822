"""Settings of a stream consumer (``inferline stream``; ``INFERLINE_STREAM__*``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["StreamSettings", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``500ms``, ``90s``, ``30m``, ``1h``, ``7d`` or a plain number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 90s, 30m, 1h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class StreamSettings(BaseModel):
    """One consumer: where it reads, where it writes, how it batches and retries."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: str | None = None
    """Where messages come from: ``redis://host:port/db?stream=NAME``,
    ``nats://host:port/SUBJECT`` or ``kafka://broker:port/TOPIC``."""
    sink: str | None = None
    """Where results go, on the same broker as the source (same URL forms)."""
    group: str = "inferline"
    """Consumer group (Redis), durable consumer (NATS) or group id (Kafka)."""
    consumer: str | None = None
    """This consumer's name in the group; default ``<hostname>-<pid>``. Give each
    replica its own."""
    results_key: str | None = None
    """Also write each result as JSON to this Redis key pattern (``score:{id}``)."""
    ttl_seconds: float | None = Field(default=None, gt=0)
    """Expiry of the result keys (``--ttl 1h``); None keeps them."""
    dead_letter: str | None = None
    """Dead-letter stream/subject/topic; default ``<source>-dead``."""
    max_deliveries: int = Field(default=5, ge=1)
    """A message delivered more times than this goes to the dead letter unscored."""
    id_field: str = "id"
    """Field of a message that carries its id to the result (the broker's id if absent)."""
    payload_field: str | None = None
    """Redis: the entry field holding the JSON object or V2 request; None reads the
    model's inputs from the entry's own fields."""
    batch_size: int = Field(default=64, ge=1, le=65536)
    """Most messages scored in one model call."""
    linger_ms: float = Field(default=2.0, ge=0)
    """How long a batch waits to fill once its first message has arrived."""
    max_inflight_batches: int = Field(default=4, ge=1)
    """Batches read and not yet acknowledged; reading pauses when this many are open."""
    block_ms: int = Field(default=500, ge=1)
    """Longest a read waits for a first message (and so how soon SIGTERM is noticed)."""
    claim_idle_ms: int = Field(default=30_000, ge=1)
    """Pending entries idle this long (a dead consumer's) are claimed by a live one."""
    max_message_bytes: int = Field(default=1024 * 1024, ge=16)
    """Largest message payload; bigger ones go to the dead letter before parsing."""
    version: str | None = None
    """Model version or alias; None follows ``production`` (else the newest)."""
    enrich: list[str] = Field(default_factory=list)
    """Servers to call instead of loading the model (``http://…``, ``grpc://…``)."""
    enrich_token: SecretStr | None = None
    """Bearer token (API key) sent to the ``enrich`` servers; prefer the environment
    variable ``INFERLINE_STREAM__ENRICH_TOKEN`` to a flag, which ``ps`` shows."""
    enrich_timeout: float = Field(default=10.0, gt=0)
    """Seconds one message's call may take, every retry included; past it the
    message stays pending and comes back."""
    enrich_retries: int = Field(default=3, ge=0, le=100)
    """Retries of one call after a 503 / UNAVAILABLE or an unreachable server, with
    backoff, on another server when one is up."""
    enrich_balance: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    """How calls are spread over the ``enrich`` servers."""
    enrich_tls_ca: Path | None = None
    """CA bundle that checks the ``https://`` / ``grpcs://`` servers (default: the system's)."""
    enrich_tls_cert: Path | None = None
    """Client certificate for mutual TLS (with ``enrich_tls_key``)."""
    enrich_tls_key: Path | None = None
    """Private key of ``enrich_tls_cert``."""
    kafka_options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Extra librdkafka settings for the Kafka consumer and producer (``security.protocol``,
    ``sasl.*``, ``session.timeout.ms``, ...)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus endpoint; None: no endpoint."""

    @model_validator(mode="after")
    def _mutual_tls_pair(self) -> StreamSettings:
        if (self.enrich_tls_cert is None) != (self.enrich_tls_key is None):
            raise ValueError("enrich_tls_cert and enrich_tls_key go together (mutual TLS)")
        return self

    @field_validator("ttl_seconds", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_duration(value)
        return value
