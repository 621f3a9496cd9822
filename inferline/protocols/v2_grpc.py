"""Open Inference Protocol (KServe V2) over gRPC, plus the standard health service.

``add_to_server`` registers both on a ``grpc.aio.Server``. Every RPC goes
through one guard (:func:`_guard`): it reads or creates the request id, turns
any exception into a gRPC status with ``as_inferline_error`` (unexpected ones
become INTERNAL with the request id and no traceback), and returns the request
id in the ``x-request-id`` trailing metadata. The converters between protobuf
messages and inferline types live in ``_grpc_codec.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.dataplane import DataPlane
from inferline.errors import NotFound
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.protocols._grpc_codec import decode_request, encode_response
from inferline.protocols.status import (
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    as_inferline_error,
    new_request_id,
)
from inferline.settings import Settings

__all__ = ["SERVICE_NAME", "add_to_server", "server_options"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Trailing metadata key carrying the model version that answered an inference.
#: How often a health ``Watch`` re-reads readiness.
HEALTH_POLL_SECONDS = 1.0

Metadata = list[tuple[str, str]]
Handler = Callable[[Any, Metadata], Awaitable[Any]]
StreamHandler = Callable[[Any, Metadata], AsyncIterator[Any]]


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel options for ``grpc.aio.server(options=...)``.

    ``so_reuseport`` lets several worker processes bind the same port; the
    kernel spreads connections between them.
    """
    size = settings.grpc_max_message_bytes
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 1),
    ]


def add_to_server(server: grpc.aio.Server, dataplane: DataPlane) -> None:
    """Register the V2 inference service and ``grpc.health.v1.Health`` on ``server``."""
    servicer = _Servicer(dataplane)
    # One guarded handler per RPC the proto declares: a new RPC without an
    # implementation fails here, at startup, not at its first call.
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    guarded = {m.name: _guard(getattr(servicer, m.name)) for m in methods}
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(SimpleNamespace(**guarded), server)
    health = _Health(dataplane)
    health_pb2_grpc.add_HealthServicer_to_server(
        SimpleNamespace(
            Check=_guard(health.check), List=_guard(health.list), Watch=_guard_stream(health.watch)
        ),
        server,
    )


def _guard(handler: Handler) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """Wrap one RPC: request id in, errors mapped to statuses, trailing metadata out."""

    async def rpc(request: Any, context: grpc.aio.ServicerContext) -> Any:
        trailers = _trailers(context)
        try:
            response = await handler(request, trailers)
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            await _abort(context, exc, trailers)
        context.set_trailing_metadata(tuple(trailers))
        return response

    return rpc


def _guard_stream(
    handler: StreamHandler,
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """:func:`_guard` for a server-streaming RPC."""

    async def rpc(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        trailers = _trailers(context)
        try:
            async for message in handler(request, trailers):
                yield message
        except Exception as exc:  # noqa: BLE001 - the one gRPC error boundary
            await _abort(context, exc, trailers)
        context.set_trailing_metadata(tuple(trailers))

    return rpc


def _trailers(context: grpc.aio.ServicerContext) -> Metadata:
    """Trailing metadata to send, starting with the client's request id or a new one."""
    return [(REQUEST_ID_HEADER, _client_request_id(context) or new_request_id())]


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, trailers: Metadata) -> NoReturn:
    error = as_inferline_error(exc, trailers[0][1])
    trailers.extend(error.headers)
    await context.abort(grpc.StatusCode[error.grpc_code], error.message, tuple(trailers))
    raise AssertionError("grpc.aio ServicerContext.abort always raises")


def _client_request_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


class _Servicer:
    """The V2 RPCs: parse, call the data plane, encode. Names follow the proto."""

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

    async def ModelInfer(
        self, request: pb.ModelInferRequest, trailers: Metadata
    ) -> pb.ModelInferResponse:
        settings = self._dataplane.settings
        decoded = decode_request(
            request, max_tensors=settings.max_tensors, max_elements=settings.max_elements
        )
        response = await self._dataplane.infer(
            request.model_name,
            request.model_version or None,
            decoded,
            protocol="grpc",
            request_id=dict(trailers).get(REQUEST_ID_HEADER, ""),
        )
        trailers.append((MODEL_VERSION_HEADER, response.model_version))
        # Answer in the form the client used, as Triton does.
        return encode_response(response, raw=bool(request.raw_input_contents))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, _: Metadata
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse()
        for name in self._dataplane.model_names():
            for version in self._dataplane.versions(name):
                ready = self._dataplane.model_ready(name, version)
                if request.ready and not ready:
                    continue
                state = "READY" if ready else "UNAVAILABLE"
                index.models.add(name=name, version=version, state=state)
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
