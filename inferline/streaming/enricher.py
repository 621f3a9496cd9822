"""The enricher pattern: the consumer calls one or more inferline servers.

Each message of a micro-batch is one ``infer`` call through
:class:`inferline.client.AsyncClient`, sent side by side: connection pooling,
round-robin or least-outstanding balancing over the endpoints, retries with
backoff on 503 / UNAVAILABLE and unreachable servers only, one deadline per
message, bearer token and (mutual) TLS, all from :class:`StreamSettings`.

A server's 4xx sends the message to the dead letter; a 5xx, a deadline, or every
endpoint down leaves it pending to come back (and after ``max_deliveries``
deliveries it goes to the dead letter too).

The model's signature is read once, at start, through the same client (REST or
gRPC metadata), so entry fields are parsed to the declared datatypes; when no
server answers the metadata call, JSON values keep their natural types. A server
that refuses the token (401/403) stops the consumer at start, before it reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from inferline.client import AsyncClient
from inferline.errors import InferlineError, PermissionDenied, Unauthenticated
from inferline.settings import StreamSettings, TensorSpec
from inferline.streaming.messages import Parsed, Scored

__all__ = ["EnricherScorer"]

logger = logging.getLogger(__name__)


class EnricherScorer:
    """Scores by calling the serving API through :mod:`inferline.client`."""

    metrics_registry: Any = None

    def __init__(self, config: StreamSettings, model: str) -> None:
        self.model = model
        self.version = config.version
        token = config.enrich_token.get_secret_value() if config.enrich_token else None
        self.client = AsyncClient(
            config.enrich,
            token=token,
            timeout=config.enrich_timeout,
            retries=config.enrich_retries,
            balance=config.enrich_balance,
            tls_ca=config.enrich_tls_ca,
            tls_cert=config.enrich_tls_cert,
            tls_key=config.enrich_tls_key,
        )
        self._specs: list[TensorSpec] | None = None

    async def start(self) -> None:
        await self.client.start()
        try:
            self._specs = await self._read_signature()
        except BaseException:
            await self.client.aclose()  # run() calls stop() only after a good start
            raise

    async def stop(self) -> None:
        await self.client.aclose()

    def signature(self) -> Sequence[TensorSpec] | None:
        return self._specs

    async def score(self, items: Sequence[Parsed]) -> list[Scored | InferlineError]:
        return list(await asyncio.gather(*(self._one(item) for item in items)))

    async def _one(self, item: Parsed) -> Scored | InferlineError:
        try:
            result = await self.client.infer(
                self.model, item.inputs, version=self.version, request_id=item.id
            )
        except InferlineError as exc:  # the client maps every failure to one of ours
            return exc
        return Scored(dict(result.outputs), result.model_version, result.variant)

    async def _read_signature(self) -> list[TensorSpec] | None:
        try:
            metadata = await self.client.metadata(self.model, version=self.version)
            return [
                TensorSpec(name=s["name"], datatype=s["datatype"], shape=s["shape"])
                for s in metadata["inputs"]
            ]
        except (Unauthenticated, PermissionDenied):
            raise  # a refused token would dead-letter every message: stop at start instead
        except (InferlineError, KeyError, TypeError, ValueError) as exc:
            logger.warning("model metadata unreadable (%s); JSON values keep their types", exc)
            return None
