"""The inferline client: V2 inference over REST and gRPC, for your own code.

    from inferline.client import AsyncClient, Client, InferResult

    async with AsyncClient(["http://10.0.0.1:8080", "grpc://10.0.0.2:8081"], token="...") as c:
        result = await c.infer("fraud", {"input": features})
        result.outputs["label"]

One client balances over several endpoints (round-robin or least outstanding
requests), retries 503 / UNAVAILABLE and unreachable endpoints with backoff, and
raises the server's errors as inferline's own classes (:mod:`inferline.errors`).
:class:`Client` is the same API, blocking. See ``docs/client.md``.
"""

from __future__ import annotations

from inferline.client._tensors import InferResult
from inferline.client.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "InferResult"]
