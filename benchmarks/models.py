"""The models every peer serves, trained on the spot, and their answers computed in process.

- ``forest``: the demo's 50-tree random forest (20 features), exported to ONNX;
- ``logreg``: a logistic regression on the same data, exported to ONNX;
- ``forest_sk`` / ``logreg_sk``: the same two estimators in scikit-learn (skops for
  inferline, joblib for MLServer's sklearn runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime
import skops.io as sio

from inferline.cli.demo import N_FEATURES, demo_data, forest_to_onnx, train_forest

__all__ = ["ONNX_MODELS", "Models", "bench_rows", "train"]

ONNX_MODELS = ("forest", "logreg")
#: What each output is called per runtime, mapped to one name for comparison.
OUTPUT_ALIASES = {
    "label": "label",
    "predict": "label",
    "probabilities": "probabilities",
    "predict_proba": "probabilities",
}


@dataclass
class Models:
    """Artifact files by model key, and the estimators to compute expected answers."""

    files: dict[str, Path]
    sessions: dict[str, onnxruntime.InferenceSession]
    estimators: dict[str, Any]

    def expected(self, model: str, rows: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """The answer computed in this process: onnxruntime or scikit-learn."""
        if model in self.sessions:
            label, probabilities = self.sessions[model].run(None, {"input": rows})
            return {"label": label, "probabilities": probabilities}
        estimator = self.estimators[model]
        return {"label": estimator.predict(rows), "probabilities": estimator.predict_proba(rows)}

    def check(
        self, model: str, rows: np.ndarray[Any, Any], got: dict[str, np.ndarray[Any, Any]]
    ) -> str | None:
        """None when ``got`` matches the in-process answer, else what differs."""
        want = self.expected(model, rows)
        named = {OUTPUT_ALIASES[k]: v for k, v in got.items() if k in OUTPUT_ALIASES}
        if "label" not in named and "probabilities" not in named:
            return f"no label or probabilities in the answer (got {sorted(got)})"
        for name, value in named.items():
            expected = want[name]
            try:
                np.testing.assert_allclose(
                    np.asarray(value, dtype=np.float64).reshape(expected.shape),
                    expected.astype(np.float64),
                    rtol=1e-5,
                    atol=1e-6,
                )
            except (AssertionError, ValueError) as exc:
                return f"{name} differs: {str(exc).strip().splitlines()[0:4]}"
        return None


def bench_rows(model: str, count: int) -> np.ndarray[Any, Any]:
    """Fixed request rows: FP32 for ONNX, FP64 for scikit-learn (its declared input)."""
    rows = np.random.default_rng(1).normal(size=(count, N_FEATURES))
    return rows.astype(np.float32 if model in ONNX_MODELS else np.float64)


def train(folder: Path) -> Models:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    features, labels = demo_data()
    forest = train_forest()
    logreg = LogisticRegression(max_iter=500).fit(features, labels)
    logreg_onnx = to_onnx(
        logreg,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(logreg): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    ).SerializeToString()
    files = {
        "forest": folder / "forest.onnx",
        "logreg": folder / "logreg.onnx",
        "forest_sk": folder / "forest.skops",
        "logreg_sk": folder / "logreg.skops",
        "forest_sk.joblib": folder / "forest.joblib",
        "logreg_sk.joblib": folder / "logreg.joblib",
    }
    files["forest"].write_bytes(forest_to_onnx(forest))
    files["logreg"].write_bytes(logreg_onnx)
    for key, estimator in (("forest_sk", forest), ("logreg_sk", logreg)):
        sio.dump(estimator, files[key])
        joblib.dump(estimator, files[f"{key}.joblib"])
    sessions = {
        key: onnxruntime.InferenceSession(str(files[key]), providers=["CPUExecutionProvider"])
        for key in ONNX_MODELS
    }
    return Models(files, sessions, {"forest_sk": forest, "logreg_sk": logreg})
