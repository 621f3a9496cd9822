"""Signature helpers the runtimes share: numpy dtypes and example arrays to ``TensorSpec``.

Datatype names come from the one table in :mod:`inferline.types`; nothing here
keeps a second one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from inferline.errors import ModelLoadError
from inferline.settings import TensorSpec
from inferline.types import datatype_of

__all__ = ["batch_spec", "check_declared", "datatype_for", "single_input"]


def datatype_for(dtype: DTypeLike, tensor: str) -> str:
    """V2 datatype of a numpy dtype; a load error when V2 has no such type."""
    try:
        return datatype_of(np.empty(0, dtype=dtype))
    except TypeError as exc:
        raise ModelLoadError(
            f"tensor {tensor!r} has dtype {dtype}, which has no V2 datatype"
        ) from exc


def batch_spec(name: str, example: np.ndarray[Any, Any]) -> TensorSpec:
    """Spec of a tensor shaped like ``example``, whose first dimension is the batch."""
    return TensorSpec(
        name=name, datatype=datatype_for(example.dtype, name), shape=[-1, *example.shape[1:]]
    )


def check_declared(
    model: str, kind: str, declared: Sequence[TensorSpec], available: Iterable[str]
) -> None:
    """Refuse settings that name tensors the artifact does not have.

    Caught at load, a typo in model-settings.yaml names itself, instead of
    failing every request later.
    """
    known = list(available)
    unknown = [spec.name for spec in declared if spec.name not in known]
    if unknown:
        raise ModelLoadError(
            f"model {model!r}: model-settings.yaml declares {kind}(s) {', '.join(unknown)}, "
            f"but the artifact has: {', '.join(known)}"
        )


def single_input(model: str, declared: Sequence[TensorSpec]) -> str:
    """Name of the one input a tabular model takes (a 2-D array): ``input`` unless declared."""
    if len(declared) > 1:
        names = ", ".join(spec.name for spec in declared)
        raise ModelLoadError(f"model {model!r} takes one input, but settings declare {names}")
    return declared[0].name if declared else "input"
