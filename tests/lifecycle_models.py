"""Small real models for lifecycle tests: forests that differ by seed, and broken artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from inferline.cli.demo import N_FEATURES, demo_data, forest_to_onnx

ROWS = np.random.default_rng(5).normal(size=(4, N_FEATURES)).astype(np.float32)


def forest_file(folder: Path, seed: int, trees: int = 8) -> Path:
    """An ONNX forest whose answers differ from other seeds' on ``ROWS``."""
    from sklearn.ensemble import RandomForestClassifier

    features, labels = demo_data(600)
    forest = RandomForestClassifier(n_estimators=trees, max_depth=6, random_state=seed).fit(
        features, labels
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"forest-{seed}-{trees}.onnx"
    path.write_bytes(forest_to_onnx(forest))
    return path


def probabilities(path: Path, rows: np.ndarray = ROWS) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": rows})[0]


def infer_body(rows: np.ndarray = ROWS) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "probabilities"}],
    }


def big_matmul_file(folder: Path, columns: int = 400_000) -> Path:
    """An ONNX model that is mostly one large weight (20 x columns float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(N_FEATURES, columns)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["scores"])],
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, columns])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.onnx"
    onnx.save(model, str(path))
    return path
