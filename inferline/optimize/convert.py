"""A registered version's artifact as ONNX: scikit-learn, XGBoost and LightGBM models.

scikit-learn goes through skl2onnx, boosters through onnxmltools. A version that
took FP64 is converted in float64 where the converter has a float64 form that
onnxruntime runs (linear models, forests' inputs), else in float32 behind a
``Cast``; either way the served signature stays the source's (see ``_graph``).
``quantize`` rewrites a float32 neural network's weights to int8 with
onnxruntime's dynamic quantization; tree ensembles have no int8 form and are refused.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from inferline.errors import ConversionRefused
from inferline.optimize._graph import Route, adapt, output_names
from inferline.settings import TensorSpec

__all__ = ["CONVERTIBLE", "convert", "quantize"]

#: Runtimes whose artifacts convert; an ``onnx`` version can only be quantized.
CONVERTIBLE = ("sklearn", "xgboost", "lightgbm")
#: Opsets onnxruntime 1.17 (the oldest the ``optimize`` extra allows) runs.
SKL2ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}
ONNXMLTOOLS_OPSET = 15  # onnxmltools 1.12-1.16 convert up to opset 15
_TREE_OPS = frozenset({"TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble"})
_QUANTIZED_OPS = frozenset(
    {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QGemm"}
)

Build = Callable[[bool], onnx.ModelProto]  # float64 inside or not -> a converted graph


def convert(
    runtime: str,
    artifact: Path,
    sha256: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    float32: bool = False,
) -> onnx.ModelProto:
    """The artifact as an ONNX graph with the version's input and output signature."""
    if runtime not in CONVERTIBLE:
        raise ConversionRefused(
            f"runtime {runtime!r} does not convert; optimize converts {', '.join(CONVERTIBLE)} "
            "and quantizes onnx versions"
        )
    matrix = _matrix_input(inputs)
    if runtime == "sklearn":
        build, routes = _sklearn(artifact, sha256, matrix, outputs)
    else:
        build, routes = _booster(runtime, artifact, matrix, outputs)
    model = _typed(build, float64=matrix.datatype == "FP64" and not float32)
    return adapt(model, inputs, outputs, routes(output_names(model)))


def quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantization of a neural network's float32 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    trees = sorted({n.op_type for n in model.graph.node} & _TREE_OPS)
    if trees:
        raise ConversionRefused(
            f"--quantize is for neural networks; this graph is a tree ensemble ({trees[0]}), "
            "and ONNX-ML tree operators have no int8 form: optimize without --quantize"
        )
    with tempfile.TemporaryDirectory(prefix="inferline-quantize-") as tmp:
        source, prepared, target = (Path(tmp) / f for f in ("in.onnx", "pre.onnx", "out.onnx"))
        onnx.save(model, str(source))
        try:
            # Shape inference and graph folding first, as onnxruntime recommends.
            quant_pre_process(str(source), str(prepared))
            # reduce_range: 7-bit weights, so the u8 x s8 pair sums of x86 CPUs without VNNI
            # (AVX2's VPMADDUBSW adds two products in int16) cannot saturate; per_channel
            # wins back the precision the lost bit costs. onnxruntime's advice for such CPUs.
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
            )
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise ConversionRefused(f"int8 quantization failed: {exc}") from exc
        quantized = onnx.load(str(target))
    if not {n.op_type for n in quantized.graph.node} & _QUANTIZED_OPS:
        raise ConversionRefused(
            "--quantize found nothing to quantize: no float32 MatMul, Gemm or Conv weights"
        )
    return quantized


def _matrix_input(inputs: list[TensorSpec]) -> TensorSpec:
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].shape[1] < 1:
        got = ", ".join(f"{s.name} {s.shape}" for s in inputs)
        raise ConversionRefused(
            f"optimize converts models with one 2-D input [-1, n_features]; this one takes {got}"
        )
    if inputs[0].datatype not in ("FP32", "FP64"):
        raise ConversionRefused(
            f"optimize converts FP32 or FP64 feature matrices; input {inputs[0].name!r} "
            f"is {inputs[0].datatype}"
        )
    return inputs[0]


def _typed(build: Build, *, float64: bool) -> onnx.ModelProto:
    """Float64 when the converter has a form onnxruntime runs; else float32."""
    if float64:
        try:
            model = build(True)
            _session(model)
            return model
        except Exception:  # noqa: BLE001 - no float64 form for this model: float32 below
            pass
    try:
        model = build(False)
    except Exception as exc:
        raise ConversionRefused(
            f"the converter refused this model: {type(exc).__name__}: {exc}"
        ) from exc
    return model


def _session(model: onnx.ModelProto) -> None:
    import onnxruntime

    onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


Routes = Callable[[dict[str, int]], dict[str, Route]]


def _sklearn(
    artifact: Path, sha256: str, matrix: TensorSpec, outputs: list[TensorSpec]
) -> tuple[Build, Routes]:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.base import is_classifier

    # The runtime's own reader: skops with its trusted types, or a pickle pinned by hash.
    from inferline.runtimes.sklearn import _read

    estimator = _read(artifact, sha256)
    classifier = is_classifier(estimator) and hasattr(estimator, "predict_proba")

    def build(float64: bool) -> onnx.ModelProto:
        tensor = DoubleTensorType if float64 else FloatTensorType
        model: onnx.ModelProto = to_onnx(
            estimator,
            initial_types=[(matrix.name, tensor([None, matrix.shape[1]]))],
            options={"zipmap": False} if classifier else None,
            target_opset=SKL2ONNX_OPSET,
        )
        return model

    def routes(graph: dict[str, int]) -> dict[str, Route]:
        first = next(iter(graph))
        found = {
            "predict": "label" if "label" in graph else first,
            "predict_proba": "probabilities",
        }
        return {spec.name: Route(found.get(spec.name, spec.name)) for spec in outputs}

    return build, routes


def _booster(
    runtime: str, artifact: Path, matrix: TensorSpec, outputs: list[TensorSpec]
) -> tuple[Build, Routes]:
    from onnxmltools.convert import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import DoubleTensorType, FloatTensorType

    if runtime == "xgboost":
        import xgboost

        # As the runtime reads it: from bytes, so XGBoost detects the format itself.
        booster: Any = xgboost.Booster(model_file=bytearray(artifact.read_bytes()))
        objective = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    else:
        import lightgbm

        booster = lightgbm.Booster(model_file=str(artifact))
        objective = ""

    def build(float64: bool) -> onnx.ModelProto:
        tensor = DoubleTensorType if float64 else FloatTensorType
        types = [(matrix.name, tensor([None, matrix.shape[1]]))]
        if runtime == "xgboost":
            model: onnx.ModelProto = convert_xgboost(
                booster, initial_types=types, target_opset=ONNXMLTOOLS_OPSET
            )
        else:
            model = convert_lightgbm(
                booster, initial_types=types, target_opset=ONNXMLTOOLS_OPSET, zipmap=False
            )
        return model

    def routes(graph: dict[str, int]) -> dict[str, Route]:
        # Boosters serve one output, ``predict``: a probability, probabilities or a value.
        spec = outputs[0]
        if "probabilities" not in graph:
            return {spec.name: Route(next(iter(graph)))}
        if objective == "multi:softmax":  # predicts the class index
            return {spec.name: Route("label")}
        if len(spec.shape) == 1:  # binary: the positive class's probability
            return {spec.name: Route("probabilities", column=1)}
        return {spec.name: Route("probabilities")}

    return build, routes
