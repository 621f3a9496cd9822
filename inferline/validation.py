"""Check a decoded request against a model's signature before it is queued.

Every failure is an :class:`InvalidInput` naming the input and what was wrong,
so one bad request never reaches a batch shared with good ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inferline.errors import InvalidInput
from inferline.settings import TensorSpec
from inferline.types import DATATYPES, Tensor

__all__ = ["as_text", "check_inputs", "check_limits"]


def check_limits(tensors: Sequence[Tensor], max_tensors: int, max_elements: int) -> None:
    if len(tensors) > max_tensors:
        raise InvalidInput(f"request has {len(tensors)} input tensors; the limit is {max_tensors}")
    for tensor in tensors:
        if tensor.data.size > max_elements:
            raise InvalidInput(
                f"input {tensor.name!r} has {tensor.data.size} elements; "
                f"the limit is {max_elements}"
            )


def check_inputs(
    model: str, tensors: Sequence[Tensor], specs: Sequence[TensorSpec], *, text: bool = False
) -> dict[str, np.ndarray[Any, Any]]:
    """The model's inputs by name, or :class:`InvalidInput` saying what does not fit.

    A numeric input whose datatype converts to the declared one without loss
    (INT32 to INT64, FP32 to FP64) is converted; any other mismatch is refused.
    With ``text`` (the runtime compares strings), BYTES inputs become ``str``
    arrays, decoded as UTF-8.
    """
    by_name = {spec.name: spec for spec in specs}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for tensor in tensors:
        spec = by_name.get(tensor.name)
        if spec is None:
            expected = ", ".join(by_name)
            raise InvalidInput(
                f"unknown input {tensor.name!r} for model {model!r}; it expects: {expected}"
            )
        if tensor.name in arrays:
            raise InvalidInput(f"input {tensor.name!r} is given more than once")
        array = _check_one(tensor, spec)
        if text and spec.datatype == "BYTES":
            array = as_text(tensor.name, array)
        arrays[tensor.name] = array
    if len(arrays) != len(by_name):
        missing = [name for name in by_name if name not in arrays]
        raise InvalidInput(f"model {model!r} is missing input(s): {', '.join(missing)}")
    return arrays


def _check_one(tensor: Tensor, spec: TensorSpec) -> np.ndarray[Any, Any]:
    data = tensor.data
    if tensor.datatype != spec.datatype:
        target = DATATYPES[spec.datatype].dtype
        if not (_numeric(data.dtype) and _numeric(target) and np.can_cast(data.dtype, target)):
            raise InvalidInput(
                f"input {tensor.name!r} has datatype {tensor.datatype}; the model expects "
                f"{spec.datatype}"
            )
        data = data.astype(target)
    shape = tensor.shape
    if not _fits(shape, spec.shape):
        raise InvalidInput(
            f"input {tensor.name!r} has shape {shape}; "
            f"the model expects {spec.shape} (-1: any size){_reshape_hint(shape, spec.shape)}"
        )
    if spec.min is not None or spec.max is not None:
        _check_range(tensor.name, data, spec)
    return data


def _fits(shape: Sequence[int], spec: Sequence[int]) -> bool:
    return len(shape) == len(spec) and all(
        want in (-1, got) for want, got in zip(spec, shape, strict=True)
    )


def _reshape_hint(shape: list[int], spec: list[int]) -> str:
    """The same data with a size-1 dimension dropped or added, when that shape would fit.

    Not reshaped silently, as Triton does not: a column vector ``[N, 1]`` for a
    ``[-1]`` input names the shape to send instead.
    """
    candidates = [shape[:i] + shape[i + 1 :] for i, d in enumerate(shape) if d == 1]
    candidates += [[*shape[:i], 1, *shape[i:]] for i in range(len(shape) + 1)]
    for candidate in candidates:
        if _fits(candidate, spec):
            return f": send it as shape {candidate}"
    return ""


def as_text(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """An object array of ``str``: ``bytes`` decoded as UTF-8, text kept as it is."""
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(array.reshape(-1)):
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"input {name!r} holds bytes that are not UTF-8 text (element {i}); "
                    "the model takes strings"
                ) from exc
        flat[i] = value
    return out


def _numeric(dtype: np.dtype[Any]) -> bool:
    """Integers and floats convert losslessly by numpy's "safe" rule; BOOL never converts."""
    return dtype.kind in "iuf"


def _check_range(name: str, data: np.ndarray[Any, Any], spec: TensorSpec) -> None:
    if data.dtype.kind not in "biuf" or data.size == 0:
        return
    for bound, op, word in ((spec.min, np.less, "below"), (spec.max, np.greater, "above")):
        if bound is None:
            continue
        limit = _broadcast(bound, data, name)
        bad = op(data, limit)
        if data.dtype.kind == "f":
            bad |= np.isnan(data)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            feature = f" feature {index[-1]}" if isinstance(bound, list) else ""
            value = data[index]
            shown_limit = bound[index[-1]] if isinstance(bound, list) else bound
            raise InvalidInput(
                f"input {name!r}{feature} at index {list(index)} is {value}, "
                f"{word} the allowed {'minimum' if word == 'below' else 'maximum'} {shown_limit}"
            )


def _broadcast(bound: float | list[float], data: np.ndarray[Any, Any], name: str) -> Any:
    if not isinstance(bound, list):
        return bound
    if data.ndim == 0 or data.shape[-1] != len(bound):
        raise InvalidInput(
            f"input {name!r} has {data.shape[-1] if data.ndim else 0} features in its last "
            f"dimension; the declared ranges cover {len(bound)}"
        )
    return np.asarray(bound)
