"""``AsyncClient`` and its blocking twin ``Client``: balancing, retries, deadlines.

Each call gets one deadline (``timeout``) that covers every attempt. An attempt
that meets 503 / UNAVAILABLE, or an endpoint that cannot be reached, is retried
(at most ``retries`` times) after an exponential backoff with full jitter, on
another endpoint when one is up; an unreachable endpoint also leaves the rotation
for ``cooldown`` seconds. Any other error (4xx, 500, 504) is raised at once, as
the inferline error class the server raised.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from inferline.client._tensors import InferResult, Transport, prepare
from inferline.client.balance import Balancer, Endpoint, Policy
from inferline.client.grpc import GrpcTransport, TlsFiles
from inferline.client.rest import RestTransport
from inferline.errors import DeadlineExceeded, EndpointUnreachable, InferlineError, Unavailable

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")
_SCHEMES = ("http", "https", "grpc", "grpcs")


class AsyncClient:
    """A V2 client over one or more inferline endpoints (``http(s)://``, ``grpc(s)://``).

    Construction does no I/O; connections open on first use (or ``async with``).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        balance: Policy = "least_outstanding",
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        cooldown: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("AsyncClient needs at least one endpoint URL")
        for url in urls:
            if url.split("://", 1)[0] not in _SCHEMES or "://" not in url:
                raise ValueError(f"endpoint {url!r}: the scheme must be one of {_SCHEMES}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together (mutual TLS)")
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries not negative")
        self.urls = urls
        self.timeout = timeout
        self.retries = retries
        self._policy: Policy = balance
        self._token = token
        self._tls = (tls_ca, tls_cert, tls_key)
        self._backoff = (backoff, max_backoff)
        self._cooldown = cooldown
        self._max_connections = max_connections
        self._balancer: Balancer | None = None
        self._lock: asyncio.Lock | None = None
        if balance not in ("round_robin", "least_outstanding"):
            raise ValueError(f"balance must be round_robin or least_outstanding, not {balance!r}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Read the TLS files and build one transport per endpoint (no connection yet)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._balancer is not None:
                return
            context, pem = await asyncio.to_thread(_read_tls, *self._tls)
            headers = {"authorization": f"Bearer {self._token}"} if self._token else {}
            transports: list[Transport] = []
            for url in self.urls:
                scheme = url.split("://", 1)[0]
                if scheme in ("http", "https"):
                    tls = context if scheme == "https" else None
                    transports.append(RestTransport(url, headers, tls, self._max_connections))
                else:
                    transports.append(
                        GrpcTransport(url, headers, pem if scheme == "grpcs" else None)
                    )
            self._balancer = Balancer(transports, self._policy, self._cooldown)

    async def aclose(self) -> None:
        """Close every connection; the client can be started again."""
        balancer, self._balancer = self._balancer, None
        self._lock = None  # a restart may come from another loop (Client.close, then a call)
        for endpoint in balancer.endpoints if balancer else ():
            await endpoint.transport.aclose()

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints with their counters (empty before the first call)."""
        return list(self._balancer.endpoints) if self._balancer else []

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> InferResult:
        """Score ``inputs`` (name → array) with ``model``; outputs come back by name."""
        prepared = prepare(inputs)
        wanted = list(outputs) if outputs is not None else None
        return await self._call(
            lambda t, left: t.infer(model, version, prepared, parameters, request_id, wanted, left),
        )

    async def ready(self, model: str, *, version: str | None = None) -> bool:
        """Whether an endpoint has ``model`` loaded and ready."""
        return await self._call(lambda t, left: t.ready(model, version, left))

    async def metadata(self, model: str, *, version: str | None = None) -> dict[str, Any]:
        """The model's V2 metadata (name, versions, platform, inputs, outputs)."""
        return await self._call(lambda t, left: t.metadata(model, version, left))

    async def _call(self, attempt: Callable[[Transport, float], Awaitable[T]]) -> T:
        if self._balancer is None:
            await self.start()
        balancer = self._balancer
        if balancer is None:  # closed while starting
            raise Unavailable("the client is closed")
        loop = asyncio.get_running_loop()
        budget = self.timeout
        deadline = loop.time() + budget
        failed: set[Endpoint] = set()
        last: InferlineError | None = None
        for tries in range(self.retries + 1):
            left = deadline - loop.time()
            if left <= 0:
                break
            endpoint = balancer.pick(failed)
            try:
                with balancer.track(endpoint):
                    async with asyncio.timeout(left):
                        result = await attempt(endpoint.transport, left)
            except TimeoutError as exc:
                raise DeadlineExceeded(f"no answer within {budget:.3g} s") from exc
            except EndpointUnreachable as exc:
                balancer.mark_down(endpoint)
                failed.add(endpoint)
                last = exc
            except Unavailable as exc:
                failed.add(endpoint)
                last = exc
            except DeadlineExceeded:
                raise
            except InferlineError:  # the server answered, with an error that stands
                balancer.mark_up(endpoint)
                raise
            else:
                balancer.mark_up(endpoint)
                return result
            if tries < self.retries:
                base, cap = self._backoff
                pause = random.uniform(0, min(cap, base * 2**tries))
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
        if last is None:
            raise DeadlineExceeded(f"no answer within {budget:.3g} s")
        raise last


def _read_tls(
    ca: str | Path | None, cert: str | Path | None, key: str | Path | None
) -> tuple[ssl.SSLContext, TlsFiles]:
    """An SSL context for https and the PEM bytes for grpcs, from the same files."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    pem: TlsFiles = (
        Path(ca).read_bytes() if ca else None,
        Path(key).read_bytes() if key else None,
        Path(cert).read_bytes() if cert else None,
    )
    return context, pem


class Client:
    """The blocking twin of :class:`AsyncClient`, with the same arguments and calls.

    It runs an :class:`AsyncClient` on an event loop in a thread of its own, so
    it works in plain code and inside a program that has its own loop; one
    ``Client`` may be shared by threads.
    """

    def __init__(self, endpoints: str | Sequence[str], **options: Any) -> None:
        self._async = AsyncClient(endpoints, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def infer(self, model: str, inputs: Mapping[str, Any], **options: Any) -> InferResult:
        return self._run(self._async.infer(model, inputs, **options))

    def ready(self, model: str, **options: Any) -> bool:
        return self._run(self._async.ready(model, **options))

    def metadata(self, model: str, **options: Any) -> dict[str, Any]:
        return self._run(self._async.metadata(model, **options))

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._async.endpoints

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._async.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._start_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="inferline-client", daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
