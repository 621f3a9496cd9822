"""InferlineError → HTTP response or gRPC status: the only mapping code.

Anything that is not an :class:`InferlineError` becomes an ``InternalError``
carrying the request id and no traceback.
"""

from __future__ import annotations

import logging
import random
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

_random_bits = random.getrandbits


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


def error_body(exc: InferlineError) -> bytes:
    """The one error shape, ``{"error": "<precise message>"}``."""
    payload: dict[str, Any] = {"error": exc.message}
    return orjson.dumps(payload)
