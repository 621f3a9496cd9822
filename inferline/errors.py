"""The one exception hierarchy; every transport maps it in one place.

Each class carries the HTTP status and the gRPC status-code *name* it stands
for, so this module imports no web or gRPC framework. ``protocols/status.py``
turns an error into a response; nothing else does.

    InferlineError                500  INTERNAL
    ├── BadRequest                400  INVALID_ARGUMENT   malformed body or header
    │   └── InvalidInput          400  INVALID_ARGUMENT   request does not fit the signature
    ├── NotFound                  404  NOT_FOUND
    │   ├── ModelNotFound
    │   └── RouteNotFound
    ├── MethodNotAllowed          405  UNIMPLEMENTED
    ├── Conflict                  409  FAILED_PRECONDITION
    ├── PayloadTooLarge           413  RESOURCE_EXHAUSTED
    ├── Unprocessable             422  INVALID_ARGUMENT
    │   └── ConversionRefused     422  INVALID_ARGUMENT   optimize: unsupported, or outputs changed
    ├── TooManyRequests           429  RESOURCE_EXHAUSTED
    ├── Unavailable               503  UNAVAILABLE
    │   ├── ModelNotReady
    │   └── QueueFull             (sets Retry-After)
    ├── DeadlineExceeded          504  DEADLINE_EXCEEDED
    ├── ModelLoadError            500  INTERNAL           artifact or runtime failed at load
    ├── InternalError             500  INTERNAL           anything unexpected, with no traceback
    └── SettingsError             500  INTERNAL           a setting the server cannot start with:
                                                          never answered; the CLI prints it, exit 2
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "ConversionRefused",
    "DeadlineExceeded",
    "InferlineError",
    "InternalError",
    "InvalidInput",
    "MethodNotAllowed",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RouteNotFound",
    "SettingsError",
    "TooManyRequests",
    "Unavailable",
    "Unprocessable",
]


class InferlineError(Exception):
    """Base class: a message safe to show a client, plus its status codes."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    #: Extra response headers (e.g. ``Retry-After``); class-level default, never mutated.
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(InferlineError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class InvalidInput(BadRequest):
    """The request is well-formed but does not fit the model's signature."""


class NotFound(InferlineError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotFound(NotFound):
    pass


class RouteNotFound(NotFound):
    pass


class MethodNotAllowed(InferlineError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"


class Conflict(InferlineError):
    """The change contradicts the current state (e.g. deleting a version an alias uses)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class PayloadTooLarge(InferlineError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unprocessable(InferlineError):
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class ConversionRefused(Unprocessable):
    """``inferline optimize`` built nothing it would register: the conversion is not
    supported, or the result answers differently from its source beyond the tolerance."""


class TooManyRequests(InferlineError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(InferlineError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class ModelNotReady(Unavailable):
    pass


class QueueFull(Unavailable):
    """The model's batching queue is full: come back shortly."""

    headers = (("retry-after", "1"),)


class DeadlineExceeded(InferlineError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class ModelLoadError(InferlineError):
    pass


class InternalError(InferlineError):
    """Something unexpected; the message never carries a traceback."""


class SettingsError(InferlineError):
    """A setting the server cannot start with (a port in use, a sink without its URL).

    ``setting`` is the field's dotted name (``monitoring.drift.p_value``); the CLI
    prints it on one line with the environment variable that sets it, and exits 2.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.detail = message
