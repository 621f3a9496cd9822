"""The one exception hierarchy; every transport maps it in one place.

Each class carries the HTTP status and the gRPC status-code *name* it stands
for, so this module imports no web or gRPC framework. ``protocols/status.py``
turns an error into a response; nothing else does.

    InferlineError                500  INTERNAL
    ├── BadRequest                400  INVALID_ARGUMENT   malformed body or header
    │   └── InvalidInput          400  INVALID_ARGUMENT   request does not fit the signature
    ├── Unauthenticated           401  UNAUTHENTICATED    no, bad, expired or revoked credentials
    ├── PermissionDenied          403  PERMISSION_DENIED  the principal's roles do not allow it
    ├── NotFound                  404  NOT_FOUND
    │   ├── ModelNotFound
    │   └── RouteNotFound
    ├── MethodNotAllowed          405  UNIMPLEMENTED
    ├── NotImplementedByServer    501  UNIMPLEMENTED      a known API inferline does not serve
    ├── Conflict                  409  FAILED_PRECONDITION
    ├── PayloadTooLarge           413  RESOURCE_EXHAUSTED
    ├── UnsupportedMediaType      415  INVALID_ARGUMENT   a Content-Type the route does not read
    ├── Unprocessable             422  INVALID_ARGUMENT
    │   └── ConversionRefused     422  INVALID_ARGUMENT   optimize: unsupported, or outputs changed
    ├── TooManyRequests           429  RESOURCE_EXHAUSTED
    │   └── RateLimited                                   (sets Retry-After)
    ├── Unavailable               503  UNAVAILABLE
    │   ├── ModelNotReady
    │   ├── QueueFull             (sets Retry-After)
    │   └── EndpointUnreachable   inferline.client: no answer from a server (refused, dropped)
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
    "EndpointUnreachable",
    "InferlineError",
    "InternalError",
    "InvalidInput",
    "MethodNotAllowed",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "NotFound",
    "NotImplementedByServer",
    "PayloadTooLarge",
    "PermissionDenied",
    "QueueFull",
    "RateLimited",
    "RouteNotFound",
    "SettingsError",
    "TooManyRequests",
    "Unauthenticated",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
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


class Unauthenticated(InferlineError):
    """No credentials, or ones that are not valid (unknown, expired, revoked, forged)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    headers = (("www-authenticate", 'Bearer realm="inferline"'),)


class PermissionDenied(InferlineError):
    """Valid credentials whose roles do not cover the request."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


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


class NotImplementedByServer(InferlineError):
    """A call of a known API that inferline does not serve (e.g. TF Serving's ``:classify``)."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class Conflict(InferlineError):
    """The change contradicts the current state (e.g. deleting a version an alias uses)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class PayloadTooLarge(InferlineError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(InferlineError):
    """The body's Content-Type is not one the route reads."""

    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class Unprocessable(InferlineError):
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class ConversionRefused(Unprocessable):
    """``inferline optimize`` built nothing it would register: the conversion is not
    supported, or the result answers differently from its source beyond the tolerance."""


class TooManyRequests(InferlineError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class RateLimited(TooManyRequests):
    """The principal's token bucket is empty; ``Retry-After`` says when it has one again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = (("retry-after", str(max(1, int(retry_after + 0.999)))),)


class Unavailable(InferlineError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class ModelNotReady(Unavailable):
    pass


class QueueFull(Unavailable):
    """The model's batching queue is full: come back shortly."""

    headers = (("retry-after", "1"),)


class EndpointUnreachable(Unavailable):
    """Raised by :mod:`inferline.client`, never by a server: an endpoint refused the
    connection or the TLS handshake, or dropped the connection before answering."""


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
