"""Models that take a mixed-type table (numbers and strings), saved with the real mlflow package.

Shared by the MLflow runtime, MLflow protocol, TF-Serving and V2 tabular tests; the
``tabular_dir`` fixture in ``tests/conftest.py`` writes them once per session.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io as sio
from mlflow.models import infer_signature
from mlflow.pyfunc.scoring_server import predictions_to_json
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from inferline.dataplane import DataPlane
from inferline.protocols.rest_app import build_app
from inferline.settings import Settings

PLANS = ("basic", "pro", "team")

#: model-settings.yaml of the plain scikit-learn pipeline: a string column needs BYTES declared.
FRAME_SETTINGS = """\
runtime: sklearn
inputs:
  - {name: amount, datatype: FP64, shape: [-1]}
  - {name: visits, datatype: INT64, shape: [-1]}
  - {name: plan, datatype: BYTES, shape: [-1]}
"""


def mixed_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Columns of three types: amount (float), visits (int), plan (str)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, rows).round(3),
            "visits": rng.integers(0, 9, rows),
            "plan": rng.choice(PLANS, rows),
        }
    )


def churn_pipeline() -> Any:
    """One-hot on the string column, the numbers passed through, a logistic regression."""
    frame = mixed_frame(200, seed=42)
    label = ((frame.amount > 50) ^ (frame.plan == "pro")).astype(int)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan"]), remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(frame, label)


class Scorer(mlflow.pyfunc.PythonModel):
    """A custom pyfunc returning a DataFrame of a float and a string column."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "score": model_input["amount"] * 2.0 + model_input["visits"],
                "tier": model_input["plan"].str.upper(),
            }
        )


class Scaled(mlflow.pyfunc.PythonModel):
    """A pyfunc that declares a param, ``scale`` (default 1.0)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return model_input["amount"].to_numpy() * (params or {}).get("scale", 1.0)


def write_tabular_models(root: Path) -> None:
    """``root/<name>/{model-settings.yaml, 1/}`` for churn, scorer, scaled, matrix and frame."""
    frame = mixed_frame(3)
    pipeline = churn_pipeline()
    x = np.random.default_rng(3).normal(size=(60, 4))
    matrix = LogisticRegression(max_iter=1000).fit(x, (x[:, 0] > 0).astype(int))
    with warnings.catch_warnings():
        # infer_signature hints that int columns cannot hold NaN: advice for model authors.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        mlflow.sklearn.save_model(
            pipeline,
            _version(root, "churn"),
            signature=infer_signature(frame, pipeline.predict(frame)),
            input_example=frame,
            pip_requirements=[],  # skips MLflow's requirement inference (seconds per model)
        )
        mlflow.pyfunc.save_model(
            _version(root, "scorer"),
            python_model=Scorer(),
            signature=infer_signature(frame, Scorer().predict(None, frame)),
            input_example=frame,
            pip_requirements=[],
        )
        mlflow.pyfunc.save_model(
            _version(root, "scaled"),
            python_model=Scaled(),
            signature=infer_signature(frame, Scaled().predict(None, frame), params={"scale": 1.0}),
            input_example=frame,
            pip_requirements=[],
        )
        mlflow.sklearn.save_model(
            matrix,
            _version(root, "matrix"),
            signature=infer_signature(x, matrix.predict(x)),
            pip_requirements=[],
        )
    (root / "frame" / "1").mkdir(parents=True)
    (root / "frame" / "model-settings.yaml").write_text(FRAME_SETTINGS)
    sio.dump(pipeline, root / "frame" / "1" / "model.skops")


def _version(root: Path, name: str) -> str:
    (root / name).mkdir(parents=True)
    (root / name / "model-settings.yaml").write_text("runtime: mlflow\n")
    return str(root / name / "1")


@cache
def _pyfunc(path: str) -> Any:
    return mlflow.pyfunc.load_model(path)


def mlflow_predict(path: Path, frame: pd.DataFrame) -> Any:
    """``mlflow.pyfunc.load_model(path).predict(frame)`` in process."""
    return _pyfunc(str(path)).predict(frame)


def mlflow_answer(path: Path, frame: pd.DataFrame) -> Any:
    """What ``mlflow models serve`` writes for that prediction (its own serialiser), parsed."""
    out = io.StringIO()
    predictions_to_json(mlflow_predict(path, frame), out)
    return json.loads(out.getvalue())


@asynccontextmanager
async def serve_folder(root: Path) -> AsyncIterator[tuple[DataPlane, httpx.AsyncClient]]:
    """A started data plane over ``root`` and an httpx client calling its app in process.

    For module-scoped fixtures, so a test module loads its MLflow models once.
    """
    plane = DataPlane(Settings(model_dir=root, http_port=0, grpc_port=0, max_body_bytes=1 << 20))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=build_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as client:
            yield plane, client
    finally:
        await plane.stop()


def mlflow_invocations(path: Path, body: bytes, content_type: str) -> tuple[int, Any]:
    """What MLflow's own scoring server code answers for this body: (status, parsed JSON)."""
    from mlflow.pyfunc.scoring_server import invocations

    model = _pyfunc(str(path))
    answer = invocations(body, content_type, model, model.metadata.get_input_schema())
    return answer.status, json.loads(answer.response)
