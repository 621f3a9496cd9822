"""MLServer 1.7 in its best configuration for small models on one core.

MLServer has no maintained ONNX runtime on PyPI, so the ONNX models go through a
tiny custom runtime calling onnxruntime (``apps/mlserver_onnx.py``); the
scikit-learn models use ``mlserver-sklearn``, the forest with adaptive batching.
Best configuration: inference in the main process (``parallel_workers: 0``; a
worker process only adds a queue hop on one core), no access log (``debug:
false``), no metrics middleware, no gzip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from peers._base import APPS, Layout, Peer


class MLServer(Peer):
    name = "mlserver"
    title = "MLServer"
    requirements: ClassVar[tuple[str, ...]] = (
        "mlserver==1.7.1",
        "mlserver-sklearn==1.7.1",
        "scikit-learn==1.9.1",
        "onnxruntime==1.31.1",
        "httptools",
    )
    serves = frozenset({"forest", "logreg", "forest_sk", "logreg_sk"})
    grpc = True
    note = (
        "parallel_workers 0, debug off (no access log), metrics and gzip off; ONNX via a "
        "custom onnxruntime runtime; forest_sk: mlserver-sklearn, adaptive batching "
        "(max_batch_size 64, max_batch_time 2 ms)"
    )

    def prepare(self, layout: Layout, artifacts: dict[str, Path]) -> None:
        settings = {
            "http_port": layout.http_port,
            "grpc_port": layout.grpc_port,
            "parallel_workers": 0,
            "debug": False,
            "metrics_endpoint": None,
            "metrics_port": layout.extra["metrics_port"],
            "gzip_enabled": False,
            "load_models_at_startup": True,
        }
        layout.models.mkdir(parents=True, exist_ok=True)
        (layout.models / "settings.json").write_text(json.dumps(settings))
        models: dict[str, dict[str, Any]] = {
            "forest": {"implementation": "mlserver_onnx.OnnxModel", "uri": "./model.onnx"},
            "logreg": {"implementation": "mlserver_onnx.OnnxModel", "uri": "./model.onnx"},
            "forest_sk": {
                "implementation": "mlserver_sklearn.SKLearnModel",
                "uri": "./model.joblib",
                "max_batch_size": 64,
                "max_batch_time": 0.002,
            },
            "logreg_sk": {
                "implementation": "mlserver_sklearn.SKLearnModel",
                "uri": "./model.joblib",
            },
        }
        for model, spec in models.items():
            folder = layout.models / model
            folder.mkdir(exist_ok=True)
            source = artifacts[f"{model}.joblib" if model.endswith("_sk") else model]
            shutil.copy(source, folder / spec.pop("uri")[2:])
            if spec["implementation"].startswith("mlserver_onnx"):
                shutil.copy(APPS / "mlserver_onnx.py", folder / "mlserver_onnx.py")
            uri = "./model.joblib" if model.endswith("_sk") else "./model.onnx"
            config = {"name": model, "parameters": {"uri": uri}, **spec}
            (folder / "model-settings.json").write_text(json.dumps(config))

    def command(self, layout: Layout) -> list[str]:
        return [str(layout.venv / "bin" / "mlserver"), "start", str(layout.models)]
