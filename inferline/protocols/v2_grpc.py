"""Open Inference Protocol (KServe V2) over gRPC, plus the standard health service.

The RPCs are written once, transport-neutral, in :class:`GrpcService`, and served
by ``add_to_server`` on a ``grpc.aio.Server`` (grpcio) or by ``grpc_h2``,
inferline's own HTTP/2 server in the event loop (the ``native`` engine). One
error boundary: the request id is read or made, any exception becomes a gRPC
status through :func:`~inferline.protocols.status.grpc_error`, the one gRPC
renderer both engines share (unexpected ones INTERNAL, with the request id and
no traceback), and the id goes back in the ``x-request-id`` trailer.
``ModelInfer``, the hot path, works on raw bytes (:meth:`GrpcService.infer`,
``_grpc_codec``), so a body that is not a valid message is INVALID_ARGUMENT
rather than grpc's own UNKNOWN; the other RPCs use the generated classes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple, NoReturn

import grpc
from grpc_health.v1 import health_pb2

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, NotFound
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._grpc_auth import admit
from inferline.protocols._grpc_codec import decode_infer, encode_infer
from inferline.protocols.status import (
    CACHE_HEADER,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    grpc_error,
    new_request_id,
)
from inferline.security import Guard
from inferline.settings import Settings

__all__ = [
    "HEALTH_SERVICE_NAME",
    "MODEL_INFER_PATH",
    "SERVICE_NAME",
    "GrpcService",
    "Rpc",
    "add_to_server",
    "batch_grpc_threads",
    "parse_message",
    "request_id_of",
    "server_options",
]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MODEL_INFER_PATH = f"/{SERVICE_NAME}/ModelInfer"
#: How often a health ``Watch`` re-reads readiness.
HEALTH_POLL_SECONDS = 1.0

#: Thread names (``/proc`` comm, at most 15 characters) of grpc core's own threads.
_GRPC_CORE_THREADS = ("event_engine", "lifeguard", "grpc_")
#: grpc.aio's completion-queue poller, a Python thread (``Thread-N (_poll_wrapper)``).
_GRPC_POLLER_THREAD = "(_poll_wrapper)"

Metadata = list[tuple[str, str]]
Handler = Callable[[Any, Metadata], Awaitable[Any]]
StreamHandler = Callable[[Any, Metadata], AsyncIterator[Any]]


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel options for ``grpc.aio.server(options=...)``.

    ``so_reuseport`` lets several worker processes bind the same port; the
    kernel spreads connections between them. ``limits`` gives the idle and
    handshake timeouts and the header-list limit.
    """
    size = settings.grpc_max_message_bytes
    limits = settings.limits
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 1),
        # The limits grpc-core has that the native engine's settings name too.
        ("grpc.max_connection_idle_ms", int(limits.idle_timeout * 1000)),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout * 1000)),
        ("grpc.max_metadata_size", limits.grpc_max_header_list_bytes),
    ]


class Rpc(NamedTuple):
    """One RPC on protobuf messages, as both transports serve it."""

    service: str
    method: str
    #: ``(request, trailers) -> response``; a server-streaming RPC yields its responses.
    handler: Handler | StreamHandler
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"


class GrpcService:
    """Every RPC inferline answers over gRPC, whatever carries it.

    ``infer`` is ``ModelInfer`` on bytes; ``rpcs`` (keyed by ``/service/method``
    path) holds the others, the V2 ones and ``grpc.health.v1.Health``. Built at
    startup: a V2 RPC the proto declares without an implementation fails here.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        servicer = _Servicer(dataplane)
        self.infer = servicer.infer
        rpcs = []
        for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
            if method.name == "ModelInfer":
                continue
            rpcs.append(
                Rpc(
                    SERVICE_NAME,
                    method.name,
                    getattr(servicer, method.name),
                    getattr(pb, method.input_type.name).FromString,
                    getattr(pb, method.output_type.name).SerializeToString,
                )
            )
        health = _Health(dataplane)
        check_request = health_pb2.HealthCheckRequest.FromString
        check_response = health_pb2.HealthCheckResponse.SerializeToString
        rpcs += [
            Rpc(HEALTH_SERVICE_NAME, "Check", health.check, check_request, check_response),
            Rpc(
                HEALTH_SERVICE_NAME,
                "List",
                health.list,
                health_pb2.HealthListRequest.FromString,
                health_pb2.HealthListResponse.SerializeToString,
            ),
            Rpc(HEALTH_SERVICE_NAME, "Watch", health.watch, check_request, check_response, True),
        ]
        self.rpcs: dict[str, Rpc] = {rpc.path: rpc for rpc in rpcs}


def request_id_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The client's ``x-request-id`` from its metadata, or a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return new_request_id()


def parse_message(rpc: Rpc, message: bytes) -> Any:
    """The request message; bytes that are not one are a client error, not INTERNAL."""
    try:
        return rpc.deserialize(message)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadRequest(f"request is not a valid message: {exc}") from exc


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1`` (``ipv6:[::1]:5000`` -> ``::1``)."""
    peer = context.peer() or "unknown"
    host = peer.partition(":")[2].rpartition(":")[0]
    return host.strip("[]") or peer


def add_to_server(
    server: grpc.aio.Server, dataplane: DataPlane, guard: Guard | None = None
) -> None:
    """Register the V2 inference service and ``grpc.health.v1.Health`` on ``server``.

    With a ``guard`` every RPC is checked against the policy table before its
    request is parsed (requests arrive as bytes; the model name is read from them).
    """
    service = GrpcService(dataplane)
    infer = grpc.unary_unary_rpc_method_handler(_model_infer(service, guard))
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {SERVICE_NAME: {"ModelInfer": infer}}
    for rpc in service.rpcs.values():
        if rpc.streaming:
            handler = grpc.unary_stream_rpc_method_handler(
                _guard_stream(rpc, guard),
                response_serializer=rpc.serialize,
            )
        else:
            handler = grpc.unary_unary_rpc_method_handler(
                _guard(rpc, guard),
                response_serializer=rpc.serialize,
            )
        by_service.setdefault(rpc.service, {})[rpc.method] = handler
    for name, handlers in by_service.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)


def _model_infer(
    service: GrpcService, guard: Guard | None
) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
    """``ModelInfer`` for grpc.aio on the wire bytes, with :func:`_guard`'s boundary inlined.

    The hot path: no per-call wrapper, list or dict, just the request id and
    the model version in one trailing-metadata tuple.
    """
    infer = service.infer

    async def model_infer(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = context.invocation_metadata()
        request_id = request_id_of(metadata)
        try:
            if guard is not None and not guard.idle:
                await admit(guard, MODEL_INFER_PATH, metadata or (), data, _peer_host(context))
            body, version, cache = await infer(data, request_id)
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            await _abort(context, exc, [(REQUEST_ID_HEADER, request_id)])
        if cache is None:
            context.set_trailing_metadata(
                ((REQUEST_ID_HEADER, request_id), (MODEL_VERSION_HEADER, version))
            )
        else:
            context.set_trailing_metadata(
                (
                    (REQUEST_ID_HEADER, request_id),
                    (MODEL_VERSION_HEADER, version),
                    (CACHE_HEADER, cache),
                )
            )
        return body

    return model_infer


def batch_grpc_threads() -> int:
    """Put grpc's own threads under ``SCHED_BATCH``; call once the server has started.

    Why: each RPC completes about seven events in grpc core, and each one wakes
    a grpc thread (an event-engine thread, then the aio poller) that, as a
    normal thread, preempts the event loop at once: some eight involuntary
    context switches per request in the middle of the loop's work. A
    ``SCHED_BATCH`` thread does not preempt on wakeup; it runs when the loop
    waits for I/O, or at the next scheduler tick, and then handles every event
    that piled up. On one pinned core (docs/benchmarks.md) the loop's involuntary
    switches fell from about 8 to 0.4 per request and CPU per request by 3-10 %
    (more when other processes share the core); with idle cores it changes
    nothing. Threads that grpc starts later from these inherit the policy.
    Returns how many threads were changed (0 where ``SCHED_BATCH`` does not
    exist, i.e. off Linux).
    """
    if not hasattr(os, "SCHED_BATCH"):
        return 0
    targets = {
        t.native_id for t in threading.enumerate() if _GRPC_POLLER_THREAD in t.name and t.native_id
    }
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().startswith(_GRPC_CORE_THREADS):
                    targets.add(int(task))
        except OSError:  # the thread ended meanwhile
            continue
    changed = 0
    for tid in targets:
        try:
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        except OSError as exc:
            logger.debug("could not set SCHED_BATCH on thread %d: %s", tid, exc)
        else:
            changed += 1
    logger.debug("grpc threads under SCHED_BATCH: %d", changed)
    return changed


def _guard(
    rpc: Rpc, guard: Guard | None
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    """Wrap one RPC: request id in, policy check, errors mapped to statuses, trailers out."""
    handler: Handler = rpc.handler  # type: ignore[assignment]

    async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        trailers = _trailers(context)
        try:
            if guard is not None and not guard.idle:
                metadata = context.invocation_metadata() or ()
                await admit(guard, rpc.path, metadata, data, _peer_host(context))
            response = await handler(parse_message(rpc, data), trailers)
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            await _abort(context, exc, trailers)
        context.set_trailing_metadata(tuple(trailers))
        return response

    return call


def _guard_stream(
    rpc: Rpc, guard: Guard | None
) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """:func:`_guard` for a server-streaming RPC."""
    handler: StreamHandler = rpc.handler  # type: ignore[assignment]

    async def call(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        trailers = _trailers(context)
        try:
            if guard is not None and not guard.idle:
                metadata = context.invocation_metadata() or ()
                await admit(guard, rpc.path, metadata, data, _peer_host(context))
            async for message in handler(parse_message(rpc, data), trailers):
                yield message
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            await _abort(context, exc, trailers)
        context.set_trailing_metadata(tuple(trailers))

    return call


def _trailers(context: grpc.aio.ServicerContext) -> Metadata:
    """Trailing metadata to send, starting with the client's request id or a new one."""
    return [(REQUEST_ID_HEADER, request_id_of(context.invocation_metadata()))]


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, trailers: Metadata) -> NoReturn:
    code, message, trailers = grpc_error(exc, trailers)
    await context.abort(grpc.StatusCode[code], message, tuple(trailers))
    raise AssertionError("grpc.aio ServicerContext.abort always raises")


class _Servicer:
    """The V2 RPCs: parse, call the data plane, encode.

    Names follow the proto, except ``infer``: it takes and returns bytes.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    async def ServerLive(self, request: pb.ServerLiveRequest, _: Metadata) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, _: Metadata
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, _: Metadata) -> pb.ModelReadyResponse:
        ready = self._dataplane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, _: Metadata
    ) -> pb.ServerMetadataResponse:
        meta = self._dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, _: Metadata
    ) -> pb.ModelMetadataResponse:
        meta = self._dataplane.model_metadata(request.name, request.version or None)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**spec) for spec in meta["inputs"]],
            outputs=[tensor(**spec) for spec in meta["outputs"]],
        )

    async def infer(self, data: bytes, request_id: str) -> tuple[bytes, str, str | None]:
        """``ModelInfer`` on the wire bytes: (response bytes, model version that answered,
        the prediction cache's "hit" or "miss" or None)."""
        settings = self._dataplane.settings
        decoded = decode_infer(
            data,
            max_tensors=settings.max_tensors,
            max_elements=settings.max_elements,
            check_model=lambda name, version: self._dataplane.check_model(
                name, version or None, protocol="grpc", request_id=request_id
            ),
        )
        response = await self._dataplane.infer(
            decoded.model_name,
            decoded.model_version or None,
            decoded.request,
            protocol="grpc",
            request_id=request_id,
        )
        # Answer in the form the client used, as Triton does.
        return encode_infer(response, raw=decoded.raw), response.model_version, response.cache

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, _: Metadata
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse()
        for entry in self._dataplane.index():
            if request.ready and entry["state"] != "READY":
                continue
            index.models.add(**entry)
        return index


class _Health:
    """``grpc.health.v1.Health`` whose status is the data plane's readiness, read live."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def _status(self, service: str) -> Any:
        status = health_pb2.HealthCheckResponse
        if service not in ("", SERVICE_NAME):
            return status.SERVICE_UNKNOWN
        return status.SERVING if self._dataplane.ready() else status.NOT_SERVING

    async def check(self, request: Any, _: Metadata) -> Any:
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            # The health protocol answers an unknown service with NOT_FOUND.
            raise NotFound(f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def list(self, request: Any, _: Metadata) -> Any:
        statuses = {
            name: health_pb2.HealthCheckResponse(status=self._status(name))
            for name in ("", SERVICE_NAME)
        }
        return health_pb2.HealthListResponse(statuses=statuses)

    async def watch(self, request: Any, _: Metadata) -> AsyncIterator[Any]:
        """Send the status now and on every change; ends when the client cancels."""
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(HEALTH_POLL_SECONDS)
