"""scikit-learn estimators: skops files, or pickles only when their SHA-256 is pinned."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io as sio

from inferline.errors import ModelLoadError
from inferline.runtimes._errors import refused
from inferline.runtimes._signature import batch_spec, check_declared, single_input
from inferline.runtimes._tabular import column_specs, frame, frame_of_matrix, require_pandas
from inferline.runtimes.base import Inputs, Model, Outputs, sample_inputs
from inferline.settings import TensorSpec

__all__ = ["SklearnModel"]

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: Top-level packages whose types a skops file may hold beyond skops' own defaults.
_TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})


class SklearnModel(Model):
    """A fitted estimator with one input, ``input`` (FP64 ``[-1, n_features_in_]``).

    An estimator fitted on a DataFrame (it has ``feature_names_in_``) takes one
    1-D input per column instead, FP64 unless model-settings.yaml declares the
    columns (say BYTES for string columns); the runtime rebuilds the DataFrame,
    in fit order, for every batch. Declaring one 2-D input keeps the matrix form.

    Outputs are ``predict`` and, when the estimator has it, ``predict_proba``;
    their datatypes and shapes come from one prediction on a row of zeros (empty
    strings for BYTES columns) at load, which also warms the model up. String
    class labels come out as BYTES.
    """

    artifact_suffixes = (".skops", *_PICKLE_SUFFIXES)
    #: Estimators fitted on strings compare ``str`` categories: b"pro" is not "pro".
    text_inputs = True

    def load(self) -> None:
        estimator = _read(self.artifact, self.settings.sha256)
        if not callable(getattr(estimator, "predict", None)):
            raise ModelLoadError(
                f"model {self.name!r}: {self.artifact.name} holds a {type(estimator).__name__}, "
                "which has no predict method"
            )
        methods = [m for m in ("predict", "predict_proba") if hasattr(estimator, m)]
        fitted_names = getattr(estimator, "feature_names_in_", None)
        self._feature_names = None if fitted_names is None else [str(n) for n in fitted_names]
        self._columns = self._table_columns()
        if self._columns is not None:
            self._load_table(estimator, methods, self._columns)
            return
        self._input = single_input(self.name, self.inputs)
        n_features = getattr(estimator, "n_features_in_", None)
        if not self.inputs and n_features is not None:
            self.inputs = [TensorSpec(name="input", datatype="FP64", shape=[-1, int(n_features)])]
        if self.outputs:
            check_declared(self.name, "output", self.outputs, methods)
        elif n_features is not None:
            row = self._features({self._input: np.zeros((1, int(n_features)))})
            self.outputs = _probe(estimator, methods, row)
        else:
            raise ModelLoadError(
                f"model {self.name!r}: the estimator does not record n_features_in_; "
                "declare 'inputs' and 'outputs' in model-settings.yaml"
            )
        self._bind_outputs(estimator)

    def _table_columns(self) -> list[TensorSpec] | None:
        """The column signature, in fit order, of a DataFrame-fitted estimator; else None."""
        names = self._feature_names
        if names is None or (len(self.inputs) == 1 and len(self.inputs[0].shape) == 2):
            return None
        if not self.inputs:
            return column_specs(names)
        check_declared(self.name, "input", self.inputs, names)
        by_name = {spec.name: spec for spec in self.inputs}
        missing = [n for n in names if n not in by_name]
        not_1d = [spec.name for spec in self.inputs if len(spec.shape) != 1]
        if missing or not_1d:
            problem = f"missing: {', '.join(missing)}" if missing else f"not 1-D: {not_1d}"
            raise ModelLoadError(
                f"model {self.name!r} was fitted on a DataFrame with columns {', '.join(names)}; "
                f"declare one input of shape [-1] per column ({problem})"
            )
        return [by_name[n] for n in names]

    def _load_table(self, estimator: Any, methods: list[str], columns: list[TensorSpec]) -> None:
        require_pandas("sklearn,pandas")
        declared = bool(self.inputs)
        self.inputs = list(self.inputs) if declared else columns
        if self.outputs:
            check_declared(self.name, "output", self.outputs, methods)
        else:
            try:
                self.outputs = _probe(estimator, methods, frame(sample_inputs(columns), columns))
            except Exception as exc:  # any failure: re-raised as a load error that says why
                hint = (
                    "declare 'outputs' in model-settings.yaml too"
                    if declared
                    else "if some columns hold strings, declare 'inputs' in model-settings.yaml: "
                    "one input of shape [-1] per column, datatype BYTES for the string ones"
                )
                raise ModelLoadError(
                    f"model {self.name!r} was fitted on a DataFrame with columns "
                    f"{', '.join(spec.name for spec in columns)}; predicting one row of "
                    f"{'declared' if declared else 'FP64'} zeros failed "
                    f"({type(exc).__name__}: {exc}); {hint}"
                ) from exc
        self._bind_outputs(estimator)

    def _bind_outputs(self, estimator: Any) -> None:
        names = {spec.name: spec for spec in self.outputs}
        self._estimator = estimator
        # Compute only what the signature names: predict_proba can cost as much as predict.
        self._want_predict = "predict" in names
        self._want_proba = "predict_proba" in names
        self._bytes_labels = self._want_predict and names["predict"].datatype == "BYTES"
        # When both are wanted and predict is argmax(predict_proba) by definition, one
        # pass over the trees answers both (a forest's predict runs predict_proba).
        self._labels_from_proba = (
            self._want_predict and self._want_proba and _predict_is_argmax_proba(estimator)
        )

    def predict(self, inputs: Inputs) -> Outputs:
        features = self._features(inputs)
        try:
            return self._estimate(features)
        except ValueError as exc:  # scikit-learn's word for "not with this input"
            raise refused(self.name, exc, inputs=inputs) from exc

    def _estimate(self, features: Any) -> Outputs:
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        if self._labels_from_proba:
            proba = self._estimator.predict_proba(features)
            labels = self._estimator.classes_.take(np.argmax(proba, axis=1), axis=0)
            outputs["predict"] = _as_bytes(labels) if self._bytes_labels else labels
            outputs["predict_proba"] = proba
            return outputs
        if self._want_predict:
            labels = self._estimator.predict(features)
            outputs["predict"] = _as_bytes(labels) if self._bytes_labels else labels
        if self._want_proba:
            outputs["predict_proba"] = self._estimator.predict_proba(features)
        return outputs

    def _features(self, inputs: Inputs) -> Any:
        if self._columns is not None:
            return frame(inputs, self._columns)
        matrix = inputs[self._input]
        names = self._feature_names
        if names is not None and matrix.ndim == 2 and matrix.shape[1] == len(names):
            # Named as at fit time, so scikit-learn does not warn on every call.
            return frame_of_matrix(matrix, names)
        return matrix

    def unload(self) -> None:
        del self._estimator


def _read(path: Path, sha256: str | None) -> Any:
    if path.suffix == ".skops":
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(t for t in untrusted if t.partition(".")[0] not in _TRUSTED_PACKAGES)
        if refused:
            raise ModelLoadError(
                f"{path.name} holds types outside scikit-learn, numpy and scipy, which are "
                f"not loaded: {', '.join(refused)}"
            )
        return sio.load(path, trusted=untrusted)
    if path.suffix in _PICKLE_SUFFIXES:
        # Hash the very bytes we unpickle, so the file cannot change after the check.
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is None:
            raise ModelLoadError(
                f"{path.name} is a pickle, and loading a pickle runs code from it. If you "
                f"trust this file, pin it in model-settings.yaml with sha256: {actual} "
                "(or save the model with skops.io.dump as a .skops file)"
            )
        if actual != sha256.lower():
            raise ModelLoadError(f"{path.name}: SHA-256 is {actual}, model-settings pins {sha256}")
        return joblib.load(io.BytesIO(data))
    raise ModelLoadError(
        f"{path.name}: expected a .skops, {', '.join(_PICKLE_SUFFIXES)} file for scikit-learn"
    )


def _probe(estimator: Any, methods: list[str], row: Any) -> list[TensorSpec]:
    """Output specs read from one prediction on one row."""
    specs = []
    for method in methods:
        result = getattr(estimator, method)(row)
        # Multi-output predict_proba returns a list of arrays: not one tensor, so not served.
        if isinstance(result, np.ndarray):
            specs.append(batch_spec(method, result))
    return specs


def _predict_is_argmax_proba(estimator: Any) -> bool:
    """Whether ``predict`` is ``classes_.take(argmax(predict_proba))``, as scikit-learn's
    single-output forest classifiers (random forest, extra trees) define it."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    forest = RandomForestClassifier  # both inherit predict and predict_proba from one base
    return (
        isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier))
        and type(estimator).predict is forest.predict
        and type(estimator).predict_proba is forest.predict_proba
        and getattr(estimator, "n_outputs_", 0) == 1
    )


def _as_bytes(labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """String labels as an object array of UTF-8 bytes, the BYTES convention."""
    return np.char.encode(labels.astype(np.str_), "utf-8").astype(object)
