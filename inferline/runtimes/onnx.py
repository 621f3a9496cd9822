"""ONNX models on onnxruntime's CPU provider; the graph carries the signature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import onnxruntime as ort

from inferline.errors import ModelLoadError
from inferline.runtimes._errors import refused
from inferline.runtimes._signature import check_declared, datatype_for
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import TensorSpec

__all__ = ["OnnxModel"]

# onnxruntime's own exception types (pybind11 classes, not exported elsewhere).
_InvalidArgument: type[Exception] = ort.capi.onnxruntime_pybind11_state.InvalidArgument
_Fail: type[Exception] = ort.capi.onnxruntime_pybind11_state.Fail

# ONNX element types whose numpy name differs; the others (int64, bool, float16, ...) match.
_NUMPY_NAMES = {"float": "float32", "double": "float64", "string": "object"}


class OnnxModel(Model):
    """An ``.onnx`` graph run by one ``InferenceSession``.

    ``parameters.intra_op_threads`` (default 1) sizes the session's own thread
    pool: the executor already runs requests side by side, so one thread each
    avoids oversubscribing the CPU.
    """

    artifact_suffixes = (".onnx",)
    #: onnxruntime reads a ``bytes`` element of a string tensor as the text "b'...'".
    text_inputs = True

    def load(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.settings.parameters.get("intra_op_threads", 1))
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(self.artifact), options, providers=["CPUExecutionProvider"]
        )
        graph_inputs = {arg.name: arg for arg in session.get_inputs()}
        graph_outputs = {arg.name: arg for arg in session.get_outputs()}
        if self.inputs:
            check_declared(self.name, "input", self.inputs, graph_inputs)
        else:
            self.inputs = [self._spec(arg, "input") for arg in graph_inputs.values()]
        if self.outputs:
            check_declared(self.name, "output", self.outputs, graph_outputs)
        # Only the outputs we fetch must be tensors: declaring the others away also works.
        for name in [spec.name for spec in self.outputs] or graph_outputs:
            _refuse_non_tensor(self.name, graph_outputs[name])
        if not self.outputs:
            self.outputs = [self._spec(arg, "output") for arg in graph_outputs.values()]
        # The hot path: one precomputed name list, the session's run bound once.
        self._names = [spec.name for spec in self.outputs]
        self._run: Callable[..., list[Any]] = _bound_run(session)
        self.session: ort.InferenceSession | None = session

    def predict(self, inputs: Inputs) -> Outputs:
        # onnxruntime's binding wants a real dict; the data plane already passes one.
        feed = inputs if type(inputs) is dict else dict(inputs)
        try:
            results = self._run(self._names, feed, None)
        except _InvalidArgument as exc:  # the graph refuses this input (type, shape, value)
            detail = str(exc).rpartition("INVALID_ARGUMENT : ")[2] or None
            raise refused(self.name, exc, detail) from exc
        except _Fail as exc:  # a kernel failed on it; its text names graph internals
            raise refused(
                self.name, exc, "onnxruntime could not run the graph on it (see the server log)"
            ) from exc
        return dict(zip(self._names, results, strict=False))

    def unload(self) -> None:
        del self._run
        self.session = None

    def _spec(self, arg: Any, kind: str) -> TensorSpec:
        dtype = _numpy_dtype(arg.type)
        if dtype is None:
            raise ModelLoadError(
                f"model {self.name!r}: {kind} {arg.name!r} has ONNX type {arg.type}, "
                "which has no V2 datatype"
            )
        if arg.shape is None:
            raise ModelLoadError(
                f"model {self.name!r}: {kind} {arg.name!r} has no known rank; "
                f"declare '{kind}s' in model-settings.yaml"
            )
        # Symbolic ("batch") and unknown (None) dimensions accept any size.
        shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape]
        return TensorSpec(name=arg.name, datatype=datatype_for(dtype, arg.name), shape=shape)


def _bound_run(session: Any) -> Callable[..., list[Any]]:
    """The session's C++ ``run``, without the Python wrapper around it.

    The wrapper checks input names, OrtValue ownership and graph-capture options,
    and retries on another execution provider when one fails: 1.6 us of a 9 us
    forest call here. The data plane has already checked the inputs against the
    graph's, and only the CPU provider is used. Falls back to the wrapper when
    the binding is not where this onnxruntime keeps it.
    """
    native = getattr(getattr(session, "_sess", None), "run", None)
    # Both take (output names, feed, run options).
    return cast(Callable[..., list[Any]], native or session.run)


def _numpy_dtype(onnx_type: str) -> np.dtype[Any] | None:
    """``tensor(float)`` -> float32; None for non-tensors and types numpy lacks (bfloat16)."""
    if not (onnx_type.startswith("tensor(") and onnx_type.endswith(")")):
        return None
    element = onnx_type[len("tensor(") : -1]
    try:
        return np.dtype(_NUMPY_NAMES.get(element, element))
    except TypeError:
        return None


def _refuse_non_tensor(model: str, arg: Any) -> None:
    if not arg.type.startswith("tensor("):
        raise ModelLoadError(
            f"model {model!r}: output {arg.name!r} has type {arg.type}, not a tensor. "
            "sklearn classifiers converted by skl2onnx emit a ZipMap (a list of dicts) by "
            "default: export with zipmap disabled, e.g. "
            "to_onnx(clf, X, options={id(clf): {'zipmap': False}}), "
            "or declare only tensor outputs in model-settings.yaml"
        )
