"""The V2 gRPC transport: grpcio's asyncio channel and the generated stubs.

Inputs go as ``raw_input_contents`` (one little-endian buffer per input; BYTES
in the 4-byte-length layout); outputs are read from ``raw_output_contents`` or,
from servers that answer with typed contents, from those. Credentials travel as
``authorization`` metadata.

An UNAVAILABLE status the server did not send itself (no ``x-request-id``
trailer: the connection failed or dropped) raises :class:`EndpointUnreachable`; any
other status raises the inferline error its code stands for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from inferline.client._errors import from_grpc
from inferline.client._tensors import InferResult, Input, from_list, from_raw, to_raw
from inferline.errors import EndpointUnreachable, InternalError
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.types import DATATYPES

__all__ = ["GrpcTransport", "TlsFiles"]

_REQUEST_ID = "x-request-id"
_VARIANT = "x-inferline-variant"
#: Large tensors: as large as the server's default limit allows (64 MiB).
_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

#: PEM bytes of (CA, client key, client certificate); None where not given.
TlsFiles = tuple[bytes | None, bytes | None, bytes | None]


class GrpcTransport:
    """One ``grpc://`` (plaintext) or ``grpcs://`` (TLS) endpoint."""

    def __init__(self, url: str, metadata: Mapping[str, str], tls: TlsFiles | None) -> None:
        self.url = url
        target = url.split("://", 1)[1].rstrip("/")
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=_OPTIONS)
        else:
            ca, key, cert = tls
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            self._channel = grpc.aio.secure_channel(target, credentials, options=_OPTIONS)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = tuple(metadata.items())

    async def infer(
        self,
        model: str,
        version: str | None,
        inputs: list[Input],
        parameters: Mapping[str, Any] | None,
        request_id: str | None,
        outputs: list[str] | None,
        budget: float,
    ) -> InferResult:
        request = pb.ModelInferRequest(model_name=model, model_version=version or "")
        if request_id is not None:
            request.id = request_id
        for item in inputs:
            request.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
            request.raw_input_contents.append(to_raw(item))
        _to_parameters(parameters or {}, request.parameters)
        for name in outputs or ():
            request.outputs.add(name=name)
        metadata = self._metadata
        if request_id is not None:
            metadata += ((_REQUEST_ID, request_id),)
        call = self._stub.ModelInfer(request, timeout=budget, metadata=metadata)
        response = await self._await(call)
        trailers = dict(await call.trailing_metadata() or ())
        return InferResult(
            outputs=_outputs(response),
            model_name=response.model_name,
            model_version=response.model_version,
            request_id=trailers.get(_REQUEST_ID) or response.id or None,
            variant=trailers.get(_VARIANT),
            parameters=_from_parameters(response.parameters),
            endpoint=self.url,
        )

    async def ready(self, model: str, version: str | None, budget: float) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        call = self._stub.ModelReady(request, timeout=budget, metadata=self._metadata)
        return bool((await self._await(call)).ready)

    async def metadata(self, model: str, version: str | None, budget: float) -> dict[str, Any]:
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        call = self._stub.ModelMetadata(request, timeout=budget, metadata=self._metadata)
        answer = MessageToDict(await self._await(call), preserving_proto_field_name=True)
        return dict(answer)

    async def aclose(self) -> None:
        await self._channel.close()

    async def _await(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            sent_by_server = any(k == _REQUEST_ID for k, _ in exc.trailing_metadata() or ())
            message = exc.details() or code
            if code == "UNAVAILABLE" and not sent_by_server:
                raise EndpointUnreachable(f"{self.url}: {message}") from exc
            raise from_grpc(code, message) from exc


def _to_parameters(values: Mapping[str, Any], target: Any) -> None:
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def _from_parameters(parameters: Any) -> dict[str, Any]:
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        for key, value in parameters.items()
    }


def _outputs(response: Any) -> dict[str, Any]:
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise InternalError(
            f"the server sent {len(raw)} raw_output_contents for {len(response.outputs)} outputs"
        )
    outputs = {}
    for i, tensor in enumerate(response.outputs):
        shape = list(tensor.shape)
        if raw:
            outputs[tensor.name] = from_raw(tensor.name, tensor.datatype, shape, raw[i])
        else:
            row = DATATYPES.get(tensor.datatype)
            data = (
                getattr(tensor.contents, row.contents_field) if row and row.contents_field else []
            )
            outputs[tensor.name] = from_list(tensor.name, tensor.datatype, shape, data)
    return outputs
