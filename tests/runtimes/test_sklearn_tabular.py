"""SklearnModel on estimators fitted on a DataFrame: one 1-D input per column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from inferline.errors import ModelLoadError
from inferline.settings import TensorSpec
from tests.tabular_models import churn_pipeline, mixed_frame

DECLARED = [
    TensorSpec(name="plan", datatype="BYTES", shape=[-1]),
    TensorSpec(name="amount", datatype="FP64", shape=[-1]),
    TensorSpec(name="visits", datatype="INT64", shape=[-1]),
]


def numeric_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return mixed_frame(rows, seed).drop(columns="plan").astype({"visits": "float64"})


def as_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    inputs = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == object:
            values = np.array([v.encode() for v in values], dtype=object)
        inputs[name] = values
    return inputs


async def test_numeric_dataframe_model_gets_fp64_columns(version_dir, load):
    frame = numeric_frame(80)
    clf = LogisticRegression(max_iter=1000).fit(frame, frame.amount > 50)
    sio.dump(clf, version_dir / "model.skops")

    model = await load("sklearn")

    assert model.inputs == [
        TensorSpec(name="amount", datatype="FP64", shape=[-1]),
        TensorSpec(name="visits", datatype="FP64", shape=[-1]),
    ]
    outputs = await model.infer(as_inputs(frame))
    np.testing.assert_array_equal(outputs["predict"], clf.predict(frame))
    np.testing.assert_allclose(outputs["predict_proba"], clf.predict_proba(frame))


async def test_a_string_column_without_declared_inputs_says_to_declare_bytes(version_dir, load):
    sio.dump(churn_pipeline(), version_dir / "model.skops")

    with pytest.raises(ModelLoadError, match=r"columns amount, visits, plan.*datatype BYTES"):
        await load("sklearn")


async def test_declared_columns_in_any_order_feed_the_fit_order(version_dir, load):
    pipeline = churn_pipeline()
    sio.dump(pipeline, version_dir / "model.skops")

    model = await load("sklearn", inputs=DECLARED)

    assert model.inputs == DECLARED
    frame = mixed_frame(30, seed=4)
    outputs = await model.infer(as_inputs(frame))
    np.testing.assert_array_equal(outputs["predict"], pipeline.predict(frame))
    np.testing.assert_allclose(outputs["predict_proba"], pipeline.predict_proba(frame))


async def test_declared_columns_must_cover_every_fitted_column(version_dir, load):
    sio.dump(churn_pipeline(), version_dir / "model.skops")

    with pytest.raises(ModelLoadError, match="missing: visits"):
        await load("sklearn", inputs=DECLARED[:2])


async def test_a_declared_matrix_keeps_the_matrix_form_without_warnings(version_dir, load):
    frame = numeric_frame(80)
    clf = LogisticRegression(max_iter=1000).fit(frame, frame.amount > 50)
    sio.dump(clf, version_dir / "model.skops")
    matrix = [TensorSpec(name="input", datatype="FP64", shape=[-1, 2])]

    model = await load("sklearn", inputs=matrix)

    # filterwarnings=error: scikit-learn's "X does not have valid feature names" would fail this.
    outputs = await model.infer({"input": frame.to_numpy()})
    np.testing.assert_array_equal(outputs["predict"], clf.predict(frame))
