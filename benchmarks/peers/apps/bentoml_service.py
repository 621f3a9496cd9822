"""A BentoML service calling onnxruntime (run inside the bentoml venv)."""

import os
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime

MODELS = Path(os.environ.get("BENCH_MODELS", "."))


def _session(name: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(MODELS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
    )


@bentoml.service(
    workers=1,
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
)
class Forest:
    def __init__(self) -> None:
        self.sessions = {name: _session(name) for name in ("forest", "logreg")}

    def _run(self, name: str, rows: np.ndarray) -> dict[str, list]:
        label, probabilities = self.sessions[name].run(None, {"input": rows.astype(np.float32)})
        return {"label": label.tolist(), "probabilities": probabilities.tolist()}

    @bentoml.api
    async def forest(self, rows: np.ndarray) -> dict[str, list]:
        return self._run("forest", rows)

    @bentoml.api
    async def logreg(self, rows: np.ndarray) -> dict[str, list]:
        return self._run("logreg", rows)
