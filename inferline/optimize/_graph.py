"""Reshape a converted ONNX graph's edges to the signature its source version served.

Converters name and type tensors their own way (``label``, ``probabilities``,
``variable``; float32 inside). Clients must not notice a conversion, so the
graph gets a ``Cast`` in front of each input whose type differs, and each served
output is rebuilt from the converter's output it stands for: one column taken
(a binary booster's positive-class probability), reshaped, cast, renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inferline.errors import ConversionRefused
from inferline.settings import TensorSpec
from inferline.types import DATATYPES

__all__ = ["Route", "adapt", "output_names"]


@dataclass(frozen=True, slots=True)
class Route:
    """Which converter output a served output is made from."""

    source: str
    #: Take this column of a ``[N, k]`` output (a binary model's positive class).
    column: int | None = None


def element_type(datatype: str) -> int:
    """The ONNX element type of a V2 datatype."""
    if datatype == "BYTES":
        return int(TensorProto.STRING)
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(DATATYPES[datatype].dtype)))


def output_names(model: onnx.ModelProto) -> dict[str, int]:
    """Graph outputs and their ranks (-1 when unknown)."""
    ranks = {}
    for value in model.graph.output:
        tensor = value.type.tensor_type
        ranks[value.name] = len(tensor.shape.dim) if tensor.HasField("shape") else -1
    return ranks


def adapt(
    model: onnx.ModelProto,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    routes: dict[str, Route],
) -> onnx.ModelProto:
    """The graph with exactly the served inputs and outputs: names, datatypes, ranks."""
    graph = model.graph
    taken = _names(graph)
    front: list[onnx.NodeProto] = []
    for spec in inputs:
        value = next((v for v in graph.input if v.name == spec.name), None)
        if value is None:
            raise ConversionRefused(f"the converted graph has no input {spec.name!r}")
        tensor = value.type.tensor_type
        want = element_type(spec.datatype)
        if tensor.elem_type != want:
            inner = _fresh(f"{spec.name}_converted", taken)
            for node in graph.node:
                node.input[:] = [inner if name == spec.name else name for name in node.input]
            front.append(helper.make_node("Cast", [spec.name], [inner], to=tensor.elem_type))
            tensor.elem_type = want
    back: list[onnx.NodeProto] = []
    served = []
    produced = {v.name: v.type.tensor_type for v in graph.output}
    for spec in outputs:
        route = routes[spec.name]
        if route.source not in produced:
            raise ConversionRefused(f"the converted graph has no output {route.source!r}")
        current = route.source
        rank = len(produced[current].shape.dim)
        elem = produced[current].elem_type
        if route.column is not None:
            index = _fresh(f"{spec.name}_column", taken)
            graph.initializer.append(
                numpy_helper.from_array(np.array(route.column, dtype=np.int64), index)
            )
            current = _step(back, "Gather", [current, index], spec.name, taken, axis=1)
            rank -= 1
        if rank != len(spec.shape):
            shape = _fresh(f"{spec.name}_shape", taken)
            dims = [-1, *(max(d, 0) for d in spec.shape[1:])]
            graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), shape))
            current = _step(back, "Reshape", [current, shape], spec.name, taken)
        want = element_type(spec.datatype)
        if elem != want:
            current = _step(back, "Cast", [current], spec.name, taken, to=want)
        if current != spec.name:
            if spec.name in taken:
                raise ConversionRefused(
                    f"the converted graph already uses the name {spec.name!r} inside"
                )
            back.append(helper.make_node("Identity", [current], [spec.name]))
            taken.add(spec.name)
        dims_out = [None if d < 0 else d for d in spec.shape]
        served.append(helper.make_tensor_value_info(spec.name, want, dims_out))
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(served)
    return model


def _step(
    nodes: list[onnx.NodeProto],
    op: str,
    inputs: list[str],
    base: str,
    taken: set[str],
    **attributes: Any,
) -> str:
    output = _fresh(f"{base}_{op.lower()}", taken)
    nodes.append(helper.make_node(op, inputs, [output], **attributes))
    return output


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output]}
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name
