"""MlflowModel: MLflow model folders loaded natively or as pyfunc, signatures read from MLmodel."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from sklearn.linear_model import LogisticRegression

from inferline.errors import ModelLoadError
from inferline.runtimes.loader import load_model
from inferline.settings import ModelSettings, TensorSpec
from tests.tabular_models import mixed_frame, mlflow_predict

COLUMNS = [
    TensorSpec(name="amount", datatype="FP64", shape=[-1]),
    TensorSpec(name="visits", datatype="INT64", shape=[-1]),
    TensorSpec(name="plan", datatype="BYTES", shape=[-1]),
]


def columns_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A DataFrame as the 1-D inputs a V2 client sends: strings as UTF-8 bytes."""
    plan = np.array([s.encode() for s in frame.plan], dtype=object)
    return {"amount": frame.amount.to_numpy(), "visits": frame.visits.to_numpy(), "plan": plan}


async def load_mlflow(path: Path, executor, **settings):
    """Load an MLflow folder as the registry would: the version folder is the model directory."""
    return await load_model(
        ModelSettings(name="m", runtime="mlflow", **settings), "1", path, executor
    )


class Fussy(mlflow.pyfunc.PythonModel):
    """Refuses empty strings, so the load-time probe on a row of zeros fails."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        if (model_input["plan"] == "").any():
            raise ValueError("plan must not be empty")
        return model_input["amount"].to_numpy() * 3


async def test_sklearn_flavor_is_called_natively_with_a_column_signature(tabular_dir, executor):
    path = tabular_dir / "churn" / "1"
    model = await load_mlflow(path, executor)

    assert model.flavor == "sklearn"
    assert model.inputs == COLUMNS
    assert model.outputs == [TensorSpec(name="predictions", datatype="INT64", shape=[-1])]
    assert model.predictions_form == "array"
    frame = mixed_frame(40, seed=5)
    outputs = await model.infer(columns_of(frame))
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, frame))


async def test_pyfunc_path_on_request_gives_the_same_answer(tabular_dir, executor):
    path = tabular_dir / "churn" / "1"
    model = await load_mlflow(path, executor, parameters={"pyfunc": True})

    assert model.flavor == "python_function"
    frame = mixed_frame(40, seed=6)
    outputs = await model.infer(columns_of(frame))
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, frame))


async def test_python_model_returning_a_dataframe_gives_one_output_per_column(
    tabular_dir, executor
):
    path = tabular_dir / "scorer" / "1"
    model = await load_mlflow(path, executor)

    assert model.flavor == "python_function"
    assert model.outputs == [
        TensorSpec(name="score", datatype="FP64", shape=[-1]),
        TensorSpec(name="tier", datatype="BYTES", shape=[-1]),
    ]
    assert model.predictions_form == "records"
    frame = mixed_frame(10, seed=7)
    outputs = await model.infer(columns_of(frame))
    expected = mlflow_predict(path, frame)
    np.testing.assert_array_equal(outputs["score"], expected["score"])
    assert outputs["tier"].tolist() == [t.encode() for t in expected["tier"]]


async def test_declared_params_are_listed(tabular_dir, executor):
    model = await load_mlflow(tabular_dir / "scaled" / "1", executor)
    assert model.param_names == ("scale",)


async def test_tensor_signature_keeps_names_shapes_and_dtypes(tabular_dir, executor):
    path = tabular_dir / "matrix" / "1"
    model = await load_mlflow(path, executor)

    assert model.inputs == [TensorSpec(name="input", datatype="FP64", shape=[-1, 4])]
    x = np.random.default_rng(8).normal(size=(12, 4))
    outputs = await model.infer({"input": x})
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, x))


@pytest.mark.parametrize("flavor", ["xgboost", "lightgbm"])
async def test_boosters_with_a_scikit_learn_api_are_called_natively(flavor, tmp_path, executor):
    frame = mixed_frame(120, seed=9).drop(columns="plan").astype({"visits": "float64"})
    label = (frame.amount > 50).astype(int)
    if flavor == "xgboost":
        import mlflow.xgboost as saver
        import xgboost

        estimator = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(frame, label)
    else:
        import lightgbm
        import mlflow.lightgbm as saver

        estimator = lightgbm.LGBMClassifier(n_estimators=8, verbose=-1).fit(frame, label)
    path = tmp_path / "model"
    signature = infer_signature(frame, estimator.predict(frame))
    saver.save_model(estimator, str(path), signature=signature, pip_requirements=[])

    model = await load_mlflow(path, executor)

    assert model.flavor == flavor
    assert [spec.name for spec in model.inputs] == ["amount", "visits"]
    outputs = await model.infer({name: frame[name].to_numpy() for name in ("amount", "visits")})
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, frame))


async def test_outputs_come_from_the_signature_when_the_probe_fails(tmp_path, executor):
    frame = mixed_frame(5)
    path = tmp_path / "fussy"
    with warnings.catch_warnings():
        # Advice for authors (integer columns cannot hold NaN; save an input example), and
        # this model is saved without an example on purpose: no probe can run on one.
        warnings.filterwarnings("ignore", "Hint: Inferred schema", UserWarning)
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        signature = infer_signature(frame, Fussy().predict(None, frame))
        mlflow.pyfunc.save_model(
            str(path), python_model=Fussy(), signature=signature, pip_requirements=[]
        )

    model = await load_mlflow(path, executor)

    assert model.outputs == [TensorSpec(name="predictions", datatype="FP64", shape=[-1])]
    outputs = await model.infer(columns_of(frame))
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, frame))


async def test_a_model_without_signature_needs_declared_inputs(tmp_path, executor):
    x = np.random.default_rng(0).normal(size=(30, 3))
    path = tmp_path / "bare"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(x, x[:, 0] > 0), str(path), pip_requirements=[]
    )

    with pytest.raises(ModelLoadError, match="declare 'inputs'"):
        await load_mlflow(path, executor)

    declared = [TensorSpec(name="input", datatype="FP64", shape=[-1, 3])]
    model = await load_mlflow(path, executor, inputs=declared)
    outputs = await model.infer({"input": x})
    np.testing.assert_array_equal(outputs["predictions"], mlflow_predict(path, x))


async def test_a_column_type_inferline_cannot_carry_is_refused(tmp_path, executor):
    x = np.random.default_rng(0).normal(size=(30, 1))
    path = tmp_path / "dated"
    signature = ModelSignature(inputs=Schema([ColSpec("datetime", "when")]))
    mlflow.sklearn.save_model(
        LogisticRegression().fit(x, x[:, 0] > 0),
        str(path),
        signature=signature,
        pip_requirements=[],
    )

    with pytest.raises(ModelLoadError, match="column 'when' has MLflow type datetime"):
        await load_mlflow(path, executor)


async def test_a_folder_without_mlmodel_is_a_load_error(tmp_path, executor):
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="is not an MLflow model"):
        await load_mlflow(tmp_path, executor)
