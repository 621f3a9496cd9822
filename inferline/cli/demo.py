"""The demo model: a 50-tree random forest on 20 synthetic features, exported to ONNX.

Trained on data made on the spot (no downloads); the benchmarks serve the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

DEMO_NAME = "demo"
N_FEATURES = 20
SEED = 0

_SETTINGS = """\
# Written by `inferline demo`. The ONNX file carries the signature; this is all it needs.
runtime: onnx
"""


def demo_data(rows: int = 2000) -> tuple[Any, Any]:
    """The synthetic training set (fixed seed), also used by tests and benchmarks."""
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=rows, n_features=N_FEATURES, n_informative=8, random_state=SEED
    )
    return features.astype("float32"), labels


def train_forest(trees: int = 50) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    features, labels = demo_data()
    return RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=SEED).fit(
        features, labels
    )


def forest_to_onnx(forest: Any) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        forest,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(forest): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onnx_model.SerializeToString())


def write_demo_model(model_dir: Path, name: str = DEMO_NAME) -> Path:
    """Write ``<model_dir>/<name>/model-settings.yaml`` and ``1/model.onnx``; return the file."""
    try:
        payload = forest_to_onnx(train_forest())
    except ImportError as exc:
        raise SystemExit(f"the demo needs: pip install 'inferline[demo]' ({exc})") from exc
    version_dir = model_dir / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / name / "model-settings.yaml").write_text(_SETTINGS)
    artifact = version_dir / "model.onnx"
    artifact.write_bytes(payload)
    return artifact


def print_usage(settings: Any) -> None:
    base = f"http://{settings.host}:{settings.http_port}"
    row = ", ".join(["0.5"] * N_FEATURES)
    tensor = f'{{"name": "input", "datatype": "FP32", "shape": [1, {N_FEATURES}], "data": [{row}]}}'
    body = f'{{"inputs": [{tensor}]}}'
    typer.echo(
        f"""
Serving model '{DEMO_NAME}': REST {base}, gRPC {settings.host}:{settings.grpc_port}
Try:
  curl {base}/v2/models/{DEMO_NAME}
  curl -H 'content-type: application/json' {base}/v2/models/{DEMO_NAME}/infer \\
    -d '{body}'
Stop with Ctrl-C.
"""
    )
