"""A library's input errors as :class:`InvalidInput`, at the runtime adapter, once.

scikit-learn refuses what it cannot use (NaN, an unknown category, a string
for a number) with ``ValueError``; onnxruntime with ``InvalidArgument``. Those
are the client's mistakes: a 400 that names the model and carries the
library's first line, short, because it describes the client's own input. The
full text always goes to the log. A failure the adapter does not recognise is
left alone and becomes the data plane's ``InternalError`` with the request id.
"""

from __future__ import annotations

import logging

from inferline.errors import InvalidInput

__all__ = ["refused"]

logger = logging.getLogger(__name__)

#: At most this many characters of a library's message reach the client.
MAX_DETAIL = 300


def refused(model: str, exc: BaseException, detail: str | None = None) -> InvalidInput:
    """The 400 for an input ``model``'s library refused; ``detail`` overrides its text.

    Raise it ``from exc``. The library's full message is logged at INFO.
    """
    logger.info("model %s refused its input: %s: %s", model, type(exc).__name__, exc)
    if detail is None:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 3] + "..."
    return InvalidInput(f"model {model!r} refused the input: {detail}")
