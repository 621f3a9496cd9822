"""InferlineError → HTTP response or gRPC status: the only mapping code.

Anything that is not an :class:`InferlineError` becomes an ``InternalError``
carrying the request id and no traceback.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from inferline.errors import InferlineError, InternalError

__all__ = [
    "MODEL_VERSION_HEADER",
    "REQUEST_ID_HEADER",
    "as_inferline_error",
    "error_body",
    "new_request_id",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
#: Which model version answered: a REST header and gRPC trailing metadata.
MODEL_VERSION_HEADER = "inferline-model-version"


def new_request_id() -> str:
    return uuid.uuid4().hex


def as_inferline_error(exc: BaseException, request_id: str) -> InferlineError:
    """The error to show a client; unexpected ones are logged with their traceback here."""
    if isinstance(exc, InferlineError):
        return exc
    logger.error("unexpected error (request id %s)", request_id, exc_info=exc)
    return InternalError(f"internal error; request id {request_id}")


def error_body(exc: InferlineError) -> bytes:
    """The one error shape, ``{"error": "<precise message>"}``."""
    payload: dict[str, Any] = {"error": exc.message}
    return orjson.dumps(payload)
