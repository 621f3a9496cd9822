"""The policy check of a gRPC call, shared by both engines (grpcio and native).

Requests reach it as bytes: the model a model-bound RPC is about is field 1 of
its message (``ModelInferRequest.model_name``, ``ModelMetadataRequest.name``,
``ModelReadyRequest.name``), read here the way protobuf reads it.
"""

from __future__ import annotations

from collections.abc import Iterable

from inferline.security import Guard, rpc_rule

__all__ = ["admit", "authorization_of", "model_name"]


def model_name(message: bytes) -> str | None:
    """Field 1 of a request message: the model a ModelInfer, ModelMetadata or ModelReady
    request is about, as protobuf reads it (the last occurrence wins); None if absent or
    the bytes are not a well-formed message (then only an unlimited grant may call)."""
    found: str | None = None
    pos, end = 0, len(message)
    try:
        while pos < end:
            key, pos = _varint(message, pos)
            wire = key & 7
            if wire == 2:
                length, pos = _varint(message, pos)
                if pos + length > end:
                    return None
                if key >> 3 == 1:
                    found = message[pos : pos + length].decode()
                pos += length
            elif wire == 0:
                pos = _varint(message, pos)[1]
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    return found if pos == end else None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise IndexError("varint longer than 10 bytes")


def authorization_of(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def admit(
    guard: Guard, path: str, metadata: Iterable[tuple[str, str | bytes]], message: bytes, peer: str
) -> None:
    """The policy check of one RPC, for both engines; raises the refusal."""
    rule = rpc_rule(path)
    authorization = authorization_of(metadata)
    model = model_name(message) if rule.model_bound else None
    await guard.check(rule, model, authorization, peer, "grpc", path)
