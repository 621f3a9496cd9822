"""Tables for runtimes whose model takes a pandas DataFrame.

A tabular signature is one 1-D input ``[-1]`` per column: V2 clients send the
columns as named tensors (as MLServer's pandas content type does), the
MLflow and TF-Serving protocols build them from rows or columns, and the
runtime turns them into one DataFrame here, inside ``predict``. BYTES columns
become ``str`` so the model sees what it saw in training.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from inferline.errors import InvalidInput, ModelLoadError
from inferline.settings import TensorSpec

__all__ = [
    "as_output",
    "column_specs",
    "frame",
    "frame_of_matrix",
    "is_tabular",
    "require_pandas",
]


def require_pandas(extra: str) -> Any:
    """The pandas module, or a load error naming the extra that installs it."""
    try:
        import pandas
    except ImportError as exc:
        raise ModelLoadError(
            f"this model takes a pandas DataFrame; pip install 'inferline[{extra}]'"
        ) from exc
    return pandas


def is_tabular(specs: Sequence[TensorSpec]) -> bool:
    """Whether a signature reads as columns: every input 1-D."""
    return bool(specs) and all(len(spec.shape) == 1 for spec in specs)


def column_specs(names: Sequence[Any], datatype: str = "FP64") -> list[TensorSpec]:
    return [TensorSpec(name=str(name), datatype=datatype, shape=[-1]) for name in names]


def frame(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    columns: Sequence[TensorSpec],
    binary: Collection[str] = (),
) -> Any:
    """One DataFrame from 1-D inputs, in ``columns`` order; BYTES decoded to ``str``
    except in the ``binary`` columns, which keep their ``bytes``."""
    import pandas as pd

    lengths = {spec.name: len(inputs[spec.name]) for spec in columns}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise InvalidInput(
            f"the columns have different lengths ({shown}); "
            "every input of a table needs one value per row"
        )
    data: dict[str, Any] = {}
    for spec in columns:
        values = inputs[spec.name]
        text = spec.datatype == "BYTES" and spec.name not in binary
        data[spec.name] = _text(spec.name, values) if text else values
    return pd.DataFrame(data, copy=False)


def frame_of_matrix(matrix: np.ndarray[Any, Any], names: Sequence[str]) -> Any:
    """A 2-D array as a DataFrame with the column names a model was fitted with."""
    import pandas as pd

    return pd.DataFrame(matrix, columns=list(names), copy=False)


def _text(name: str, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty(values.shape, dtype=object)
    try:
        for i, value in enumerate(values):
            out[i] = value.decode() if isinstance(value, bytes) else value
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input {name!r} holds bytes that are not UTF-8 text") from exc
    return out


def as_output(values: Any) -> np.ndarray[Any, Any]:
    """An array with a V2 datatype: text and objects become BYTES (UTF-8), dates ISO text."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "M":
        return _bytes_of(np.datetime_as_string(array))
    if kind == "O":
        # A pandas object column may hold plain numbers or bools: keep them numeric.
        inferred = np.asarray(array.tolist())
        if inferred.dtype.kind in "biuf" and inferred.shape == array.shape:
            return inferred
    return _bytes_of(array)


def _bytes_of(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, value in enumerate(array.reshape(-1)):
        flat[i] = value if isinstance(value, bytes) else str(value).encode()
    return out
