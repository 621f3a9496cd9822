"""InferlineError → HTTP response or gRPC status: the only mapping code.

One renderer per transport: :func:`rest_error` gives every REST route family
its error answer (the app registers it once, for :class:`InferlineError` and as
the fallback for anything else; the V2 infer fast path calls it directly), and
:func:`grpc_error` gives both gRPC engines (grpcio and the native one) their
status, message and trailers. Anything that is not an :class:`InferlineError`
becomes an ``InternalError`` carrying the request id and no traceback.

REST bodies are ``{"error": "<message>"}``, except on the MLflow routes, which set
:data:`ERROR_SHAPE` to ``"mlflow"`` in their scope and get MLflow's
``{"error_code": "BAD_REQUEST", "message": "<message>"}``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson

from inferline.errors import InferlineError, InternalError

__all__ = [
    "CACHE_HEADER",
    "ERROR_SHAPE",
    "MODEL_VERSION_HEADER",
    "REQUEST_ID_HEADER",
    "as_inferline_error",
    "error_body",
    "grpc_error",
    "new_request_id",
    "rest_error",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
#: Which model version answered: a REST header and gRPC trailing metadata.
MODEL_VERSION_HEADER = "inferline-model-version"
#: "hit" or "miss" when the model's prediction cache was asked: a REST header and
#: gRPC trailing metadata.
CACHE_HEADER = "x-inferline-cache"

#: ASGI scope key naming the error body shape of the route family answering
#: (``"mlflow"``); unset, the one shape ``{"error": ...}``.
ERROR_SHAPE = "inferline.error_shape"

_random_bits = random.getrandbits
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
_JSON_TYPE = (b"content-type", b"application/json")
#: MLflow's error codes (``mlflow/protos/databricks.proto``) by HTTP status.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def new_request_id() -> str:
    """32 random hex digits, as long as a uuid4's hex.

    From the ``random`` generator: an id needs to be unique, not secret, and this
    costs a tenth of ``uuid.uuid4()`` (one ``os.urandom`` syscall per id).
    """
    return f"{_random_bits(128):032x}"


def as_inferline_error(exc: BaseException, request_id: str) -> InferlineError:
    """The error to show a client; unexpected ones are logged with their traceback here."""
    if isinstance(exc, InferlineError):
        return exc
    logger.error(
        "unexpected error (request id %s)",
        request_id,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return InternalError(f"internal error; request id {request_id}")


def error_body(exc: InferlineError, shape: str | None = None) -> bytes:
    """``{"error": "<precise message>"}``, or MLflow's shape when ``shape`` is "mlflow"."""
    payload: dict[str, Any]
    if shape == "mlflow":
        code = _MLFLOW_CODES.get(exc.http_status, "INTERNAL_ERROR")
        payload = {"error_code": code, "message": exc.message}
    else:
        payload = {"error": exc.message}
    return orjson.dumps(payload)


def rest_error(
    exc: BaseException, request_id: str, shape: str | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A REST error answer: (status, header list, body), for any exception.

    Headers: the request id, the error's own (e.g. ``retry-after``), then the
    body's length and type, in the order Starlette's ``Response`` would give them.
    """
    error = as_inferline_error(exc, request_id)
    body = error_body(error, shape)
    headers = [(_REQUEST_ID_KEY, request_id.encode("latin-1"))]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers]
    headers += [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
    return error.http_status, headers, body


def grpc_error(
    exc: BaseException, trailers: list[tuple[str, str]]
) -> tuple[str, str, list[tuple[str, str]]]:
    """A failed RPC: (``grpc.StatusCode`` name, message, trailers), for any exception.

    ``trailers`` starts with the request id; the error's own headers are added.
    """
    error = as_inferline_error(exc, trailers[0][1])
    trailers.extend(error.headers)
    return error.grpc_code, error.message, trailers
