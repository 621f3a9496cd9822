"""Server answers → inferline's own exception classes, for both transports.

A REST error status or a gRPC status code names the class the server raised
(``errors.py`` carries both codes on each class); the message is the server's
``{"error": ...}`` body or the gRPC details. Where several classes share a code,
the one a client call can meet is chosen: a 404 is :class:`ModelNotFound`, a 400
:class:`InvalidInput` (a :class:`BadRequest`), a 503 :class:`Unavailable`.
"""

from __future__ import annotations

from inferline.errors import (
    Conflict,
    DeadlineExceeded,
    InferlineError,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    ModelNotFound,
    NotImplementedByServer,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)

__all__ = ["from_grpc", "from_http"]

_BY_STATUS: dict[int, type[InferlineError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: ModelNotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
    501: NotImplementedByServer,
    503: Unavailable,
    504: DeadlineExceeded,
}

_BY_CODE: dict[str, type[InferlineError]] = {
    "INVALID_ARGUMENT": InvalidInput,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": ModelNotFound,
    "FAILED_PRECONDITION": Conflict,
    "RESOURCE_EXHAUSTED": TooManyRequests,
    "UNIMPLEMENTED": NotImplementedByServer,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
}


def from_http(status: int, message: str, retry_after: str | None = None) -> InferlineError:
    """The error a REST answer of ``status`` with body message ``message`` stands for."""
    if status == 429 and retry_after is not None and retry_after.isdigit():
        return RateLimited(message, float(retry_after))
    return _BY_STATUS.get(status, InternalError)(message)


def from_grpc(code: str, message: str) -> InferlineError:
    """The error a gRPC status ``code`` (a ``grpc.StatusCode`` name) stands for."""
    return _BY_CODE.get(code, InternalError)(message)
