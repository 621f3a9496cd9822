"""The enricher pattern: the consumer calls one or more inferline servers.

Each message of a micro-batch is one ``infer`` call through
:class:`inferline.client.AsyncClient` (connection pooling, least-outstanding
balancing over the endpoints, retries with backoff on 503/UNAVAILABLE only),
sent side by side. A server's 4xx sends the message to the dead letter; a 5xx,
or every endpoint down, leaves it pending to come back.

The model's signature is read once from the first HTTP endpoint's metadata, so
entry fields are parsed to the declared datatypes; with only gRPC endpoints JSON
values keep their natural types (use a V2 request in ``--payload-field`` to
state them).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence
from typing import Any

from inferline.errors import InferlineError, Unavailable
from inferline.settings import TensorSpec
from inferline.streaming.messages import Parsed, Scored

__all__ = ["EnricherScorer"]

logger = logging.getLogger(__name__)


class EnricherScorer:
    """Scores by calling the serving API (``inferline.client``, imported lazily)."""

    metrics_registry: Any = None

    def __init__(
        self,
        endpoints: list[str],
        model: str,
        version: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.endpoints = endpoints
        self.model = model
        self.version = version
        self.token = token
        self.timeout = timeout
        self._client: Any = None
        self._specs: list[TensorSpec] | None = None

    async def start(self) -> None:
        # Imported by name: the client library is optional for the embedded pattern.
        client = importlib.import_module("inferline.client")
        self._client = client.AsyncClient(self.endpoints, token=self.token, timeout=self.timeout)
        await self._client.__aenter__()
        self._specs = await self._read_signature()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    def signature(self) -> Sequence[TensorSpec] | None:
        return self._specs

    async def score(self, items: Sequence[Parsed]) -> list[Scored | InferlineError]:
        return list(await asyncio.gather(*(self._one(item) for item in items)))

    async def _one(self, item: Parsed) -> Scored | InferlineError:
        try:
            result = await self._client.infer(
                self.model, item.inputs, version=self.version, request_id=item.id
            )
        except InferlineError as exc:
            return exc
        except OSError as exc:  # every endpoint unreachable: the message comes back
            return Unavailable(f"no inference server answered: {exc}")
        return Scored(dict(result.outputs), result.model_version, result.variant)

    async def _read_signature(self) -> list[TensorSpec] | None:
        import httpx

        http = [e for e in self.endpoints if e.startswith(("http://", "https://"))]
        if not http:
            return None
        path = f"/v2/models/{self.model}" + (f"/versions/{self.version}" if self.version else "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, headers=headers) as client:
                reply = await client.get(http[0].rstrip("/") + path)
                reply.raise_for_status()
                inputs = reply.json()["inputs"]
            return [TensorSpec.model_validate(spec) for spec in inputs]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            logger.warning("model metadata unreadable (%s); JSON values keep their types", exc)
            return None
