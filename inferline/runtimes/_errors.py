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
from collections.abc import Mapping
from typing import Any

import numpy as np

from inferline.errors import InvalidInput

__all__ = ["refused"]

logger = logging.getLogger(__name__)

#: At most this many characters of a library's message reach the client.
MAX_DETAIL = 300


def refused(
    model: str,
    exc: BaseException,
    detail: str | None = None,
    inputs: Mapping[str, np.ndarray[Any, Any]] | None = None,
) -> InvalidInput:
    """The 400 for an input ``model``'s library refused; ``detail`` overrides its text.

    Raise it ``from exc``. The library's full message is logged at INFO. When the
    library complains about NaN, the ``inputs`` holding one are named, with the
    first row, since the library only knows its own name for them ("X").
    """
    logger.info("model %s refused its input: %s: %s", model, type(exc).__name__, exc)
    if detail is None:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 3] + "..."
    if inputs is not None and "NaN" in detail:
        detail += _where_nan(inputs)
    return InvalidInput(f"model {model!r} refused the input: {detail}")


def _where_nan(inputs: Mapping[str, np.ndarray[Any, Any]]) -> str:
    found = []
    for name, array in inputs.items():
        if array.dtype.kind == "f" and array.size:
            by_row = np.isnan(array).reshape(array.shape[0] if array.ndim else 1, -1)
            rows = np.flatnonzero(by_row.any(axis=1))
            if rows.size:
                found.append(f"input {name!r} row {int(rows[0])}")
    return f" (NaN in {', '.join(found)})" if found else ""
