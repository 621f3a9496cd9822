"""MLflow models: a folder with an ``MLmodel`` file, as ``mlflow models serve`` takes it.

The version folder *is* the MLflow model directory (``artifact_is_dir``), so
``inferline models register churn ./mlruns/…/artifacts/model`` serves it as is.

How it is called. A model with an ``sklearn``, ``xgboost`` (scikit-learn API)
or ``lightgbm`` flavor is loaded by that flavor's MLflow loader and called
directly: the data plane has already checked every input against the same
signature, so pyfunc's per-call schema enforcement (a few hundred microseconds)
would only repeat it. Anything else, and any model whose
``parameters.pyfunc`` is true, goes through ``mlflow.pyfunc.load_model``.
Loading an MLflow model may unpickle code: serve only folders you trust.

Signature. Column (``ColSpec``) inputs become one 1-D input per column
(double→FP64, float→FP32, long→INT64, integer→INT32, boolean→BOOL,
string/binary→BYTES) and reach the model as one DataFrame in signature order;
tensor inputs keep their names, shapes and dtypes. Outputs come from one
prediction at load on the saved input example (else on a row of zeros), which
shows what the model really returns; when that prediction fails, from the
output signature; else they are whatever the first request returns. A
DataFrame result gives one output per column, a dict one per key, and an array
or list one output, ``predictions``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd  # a dependency of mlflow itself
from mlflow.exceptions import MlflowException
from mlflow.models import Model as MLmodel
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types import TensorSpec as MLflowTensorSpec

from inferline.errors import ModelLoadError
from inferline.runtimes._errors import refused
from inferline.runtimes._signature import batch_spec, datatype_for
from inferline.runtimes._tabular import as_output, frame, is_tabular
from inferline.runtimes.base import Inputs, Model, Outputs, sample_inputs
from inferline.settings import TensorSpec

__all__ = ["MlflowModel"]

logger = logging.getLogger(__name__)

#: How ``mlflow models serve`` would shape ``predictions``: a DataFrame's records,
#: a dict of lists, or one array as a (nested) list.
PredictionsForm = Literal["array", "records", "dict"]

#: Flavors called natively, and the attribute of the pyfunc conf naming the method.
_NATIVE_FLAVORS = ("sklearn", "xgboost", "lightgbm")
_COLUMN_TYPES = {
    DataType.double: "FP64",
    DataType.float: "FP32",
    DataType.long: "INT64",
    DataType.integer: "INT32",
    DataType.boolean: "BOOL",
    DataType.string: "BYTES",
    DataType.binary: "BYTES",
}
#: MlflowException codes that mean "this input", from pyfunc's schema enforcement.
_INPUT_ERROR_CODES = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
#: The output name of a model that returns one array.
SINGLE_OUTPUT = "predictions"


class MlflowModel(Model):
    """An MLflow model directory; see the module docstring for how it is loaded and called."""

    artifact_is_dir = True

    def load(self) -> None:
        try:
            meta = MLmodel.load(self.artifact)
        except Exception as exc:  # any MLflow failure: a load error naming the folder
            raise ModelLoadError(
                f"model {self.name!r}: {self.artifact} is not an MLflow model ({exc})"
            ) from exc
        signature = meta.signature
        schema = signature.inputs if signature is not None else None
        if not self.inputs and schema is not None:
            self.inputs = _inputs_from_schema(self.name, schema)
        #: Columns of MLflow type binary: they reach the model as bytes, and the MLflow
        #: protocol base64-decodes them in the DataFrame formats, as MLflow does.
        self.binary_columns: frozenset[str] = frozenset(
            col.name if col.name is not None else str(i)
            for i, col in enumerate(schema.inputs if schema is not None else ())
            if isinstance(col, ColSpec) and col.type == DataType.binary
        )
        self._tabular = (schema is not None and not schema.is_tensor_spec()) or (
            schema is None and is_tabular(self.inputs)
        )
        # One tensor the signature does not name reaches the model as a bare array.
        named = schema is not None and schema.has_input_names()
        self._bare = len(self.inputs) == 1 and not named
        #: Params the signature declares; the MLflow protocol refuses values it cannot pass.
        self.param_names: tuple[str, ...] = tuple(
            p.name for p in (signature.params.params if signature and signature.params else ())
        )
        self.flavor, self._call = _loader(meta, str(self.artifact), self.settings.parameters)
        declared = bool(self.outputs)
        self._single_name = self.outputs[0].name if len(self.outputs) == 1 else SINGLE_OUTPUT
        self.predictions_form: PredictionsForm | None = None
        #: Outputs the model returns as ``bytes``: MLflow writes them base64-encoded.
        self.binary_outputs: frozenset[str] = frozenset()
        probed = self._probe(meta)
        if probed is not None:
            specs, self.predictions_form = probed
            if not declared:
                self.outputs = specs
        elif signature is not None and signature.outputs is not None:
            specs, self.predictions_form = _outputs_from_schema(signature.outputs)
            if not declared:
                self.outputs = specs
        logger.info("model %s: MLflow %s flavor", self.name, self.flavor)

    def predict(self, inputs: Inputs) -> Outputs:
        data = self._data(inputs)
        try:
            result = self._call(data)
        except MlflowException as exc:
            if exc.error_code not in _INPUT_ERROR_CODES:
                raise
            raise refused(self.name, exc) from exc  # pyfunc's schema enforcement
        except ValueError as exc:
            if self.flavor not in _NATIVE_FLAVORS:
                raise  # custom pyfunc code: its text is not known to be safe to show
            # scikit-learn's "not with this input"
            raise refused(self.name, exc, inputs=inputs) from exc
        arrays, _ = _arrays(result, self._single_name)
        return arrays

    def _data(self, inputs: Inputs) -> Any:
        """What pyfunc would hand the model: a DataFrame, one array or a dict of arrays."""
        if self._tabular:
            return frame(inputs, self.inputs, self.binary_columns)
        if self._bare:
            return inputs[self.inputs[0].name]
        return dict(inputs)

    def _probe(self, meta: MLmodel) -> tuple[list[TensorSpec], PredictionsForm] | None:
        """Outputs read from one prediction on the input example, else on a row of zeros."""
        try:
            example = meta.load_input_example(str(self.artifact))
        except Exception as exc:  # noqa: BLE001 - no readable example: fall back to zeros
            logger.info("model %s: input example not read (%s)", self.name, exc)
            example = None
        try:
            if example is not None:
                result = self._call(example)
            elif self.inputs:
                result = self._call(self._data(sample_inputs(self.inputs)))
            else:
                return None
            arrays, form = _arrays(result, self._single_name)
            self.binary_outputs = _bytes_valued(result, self._single_name)
        except Exception as exc:  # noqa: BLE001 - model refuses the probe: use the signature
            logger.info("model %s: probe prediction failed (%s)", self.name, exc)
            return None
        return [batch_spec(name, array) for name, array in arrays.items()], form

    def unload(self) -> None:
        del self._call


def _bytes_valued(result: Any, single_name: str) -> frozenset[str]:
    """Names of the outputs whose values are ``bytes`` in a model's result."""

    def has_bytes(values: Any) -> bool:
        array = np.asarray(values)
        if array.dtype.kind == "S":
            return True
        return array.dtype.kind == "O" and any(isinstance(v, bytes) for v in array.reshape(-1))

    if isinstance(result, pd.DataFrame):
        return frozenset(str(c) for c in result.columns if has_bytes(result[c].to_numpy()))
    if isinstance(result, pd.Series):
        name = str(result.name) if result.name is not None else "0"
        return frozenset([name]) if has_bytes(result.to_numpy()) else frozenset()
    if isinstance(result, dict):
        return frozenset(str(k) for k, v in result.items() if has_bytes(v))
    return frozenset([single_name]) if has_bytes(result) else frozenset()


def _inputs_from_schema(model: str, schema: Schema) -> list[TensorSpec]:
    specs = []
    for i, spec in enumerate(schema.inputs):
        if isinstance(spec, MLflowTensorSpec):
            name = spec.name or ("input" if len(schema.inputs) == 1 else f"input_{i}")
            specs.append(_tensor(name, spec))
        else:
            specs.append(_column(model, i, spec))
    return specs


def _tensor(name: str, spec: MLflowTensorSpec) -> TensorSpec:
    datatype = datatype_for(spec.type, name)
    return TensorSpec(name=name, datatype=datatype, shape=[int(d) for d in spec.shape])


def _column(model: str, index: int, col: ColSpec) -> TensorSpec:
    name = col.name if col.name is not None else str(index)
    datatype = _COLUMN_TYPES.get(col.type) if isinstance(col.type, DataType) else None
    if datatype is None:
        shown = col.type.name if isinstance(col.type, DataType) else str(col.type)
        raise ModelLoadError(
            f"model {model!r}: column {name!r} has MLflow type {shown}, which inferline "
            f"does not serve; supported: {', '.join(t.name for t in _COLUMN_TYPES)}"
        )
    return TensorSpec(name=name, datatype=datatype, shape=[-1])


def _outputs_from_schema(schema: Schema) -> tuple[list[TensorSpec], PredictionsForm]:
    specs = _inputs_from_schema("output", schema)
    if not schema.has_input_names():
        return [specs[0].model_copy(update={"name": SINGLE_OUTPUT})], "array"
    return specs, "dict" if schema.is_tensor_spec() else "records"


def _loader(
    meta: MLmodel, path: str, parameters: Mapping[str, Any]
) -> tuple[str, Callable[[Any], Any]]:
    """(flavor, predict callable): the native model where it is faster, else pyfunc."""
    pyfunc_conf = meta.flavors.get("python_function", {})
    method = pyfunc_conf.get("predict_fn", "predict")
    if not parameters.get("pyfunc"):
        for flavor in _NATIVE_FLAVORS:
            if flavor in meta.flavors:
                native = _native(flavor, path, method)
                if native is not None:
                    return flavor, native
    if not pyfunc_conf:
        raise ModelLoadError(
            f"{path}: the MLflow model has no python_function flavor nor one inferline calls "
            f"natively ({', '.join(_NATIVE_FLAVORS)}); its flavors: {', '.join(meta.flavors)}"
        )
    model = mlflow.pyfunc.load_model(path)
    return "python_function", model.predict


def _native(flavor: str, path: str, method: str) -> Callable[[Any], Any] | None:
    """The native model's method, as the flavor's pyfunc wrapper would call it."""
    import importlib

    loaded = importlib.import_module(f"mlflow.{flavor}").load_model(path)
    if flavor == "xgboost" and not hasattr(loaded, "get_xgb_params"):
        return None  # a bare Booster: pyfunc builds a DMatrix for it; keep its path
    fn = getattr(loaded, method, None)
    return fn if callable(fn) else None


def _arrays(
    result: Any, single_name: str
) -> tuple[dict[str, np.ndarray[Any, Any]], PredictionsForm]:
    """A model's result as named arrays, and how MLflow would shape it as ``predictions``."""
    if isinstance(result, pd.DataFrame):
        return {str(c): as_output(result[c].to_numpy()) for c in result.columns}, "records"
    if isinstance(result, pd.Series):
        name = str(result.name) if result.name is not None else "0"
        return {name: as_output(result.to_numpy())}, "records"
    if isinstance(result, dict):
        return {str(k): as_output(v) for k, v in result.items()}, "dict"
    return {single_name: as_output(result)}, "array"
