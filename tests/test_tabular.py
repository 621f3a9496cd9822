"""Tabular V2 inputs: named 1-D columns of mixed types reach a DataFrame model unchanged.

The same mixed-type models answer over V2 and over ``/invocations`` with the values
the model gives in process.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from tests.tabular_models import churn_pipeline, mixed_frame, mlflow_predict, serve_folder

pytestmark = pytest.mark.asyncio(loop_scope="module")

TYPES = {"amount": "FP64", "visits": "INT64", "plan": "BYTES"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tabular_dir):
    async with serve_folder(tabular_dir) as (_, http):
        yield http


def columns(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as V2 inputs: one named 1-D tensor per column, strings as BYTES."""
    return [
        {"name": c, "datatype": TYPES[c], "shape": [len(frame)], "data": frame[c].tolist()}
        for c in frame.columns
    ]


async def infer(client, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


async def test_metadata_lists_one_column_per_input(client):
    for model in ("frame", "churn"):
        meta = (await client.get(f"/v2/models/{model}")).json()
        assert meta["inputs"] == [
            {"name": "amount", "datatype": "FP64", "shape": [-1]},
            {"name": "visits", "datatype": "INT64", "shape": [-1]},
            {"name": "plan", "datatype": "BYTES", "shape": [-1]},
        ]


async def test_a_scikit_learn_dataframe_pipeline_over_v2_and_invocations(client):
    pipeline = churn_pipeline()
    frame = mixed_frame(25, seed=31)

    outputs = await infer(client, "frame", columns(frame))
    np.testing.assert_array_equal(outputs["predict"]["data"], pipeline.predict(frame))
    assert outputs["predict_proba"]["shape"] == [25, 2]
    np.testing.assert_allclose(
        np.reshape(outputs["predict_proba"]["data"], (25, 2)), pipeline.predict_proba(frame)
    )

    split = {"dataframe_split": frame.to_dict(orient="split")}
    answer = (await client.post("/models/frame/invocations", json=split)).json()["predictions"]
    np.testing.assert_array_equal(answer["predict"], pipeline.predict(frame))
    np.testing.assert_allclose(answer["predict_proba"], pipeline.predict_proba(frame))


@pytest.mark.parametrize("model", ["churn", "scorer"])
async def test_mlflow_table_models_over_v2_and_invocations(client, tabular_dir, model):
    frame = mixed_frame(15, seed=32)
    expected = mlflow_predict(tabular_dir / model / "1", frame)

    outputs = await infer(client, model, columns(frame))
    csv = await client.post(
        f"/models/{model}/invocations",
        content=frame.to_csv(index=False),
        headers={"content-type": "text/csv"},
    )

    if isinstance(expected, pd.DataFrame):
        assert outputs["score"]["data"] == expected["score"].tolist()
        assert outputs["tier"]["data"] == expected["tier"].tolist()
        assert csv.json()["predictions"] == expected.to_dict(orient="records")
    else:
        assert outputs["predictions"]["data"] == expected.tolist()
        assert csv.json()["predictions"] == expected.tolist()


async def test_v2_and_invocations_agree_row_for_row(client):
    frame = mixed_frame(10, seed=33)
    v2 = await infer(client, "scorer", columns(frame))
    records = {"dataframe_records": frame.to_dict(orient="records")}
    mlflow = (await client.post("/models/scorer/invocations", json=records)).json()
    assert mlflow["predictions"] == [
        {"score": s, "tier": t}
        for s, t in zip(v2["score"]["data"], v2["tier"]["data"], strict=True)
    ]


BAD_COLUMNS = [
    (
        {"plan": {"datatype": "FP64", "data": [1.0]}},
        "input 'plan' has datatype FP64; the model expects BYTES",
    ),
    ({"amount": {"shape": [1, 1]}}, "input 'amount' has shape [1, 1]; the model expects [-1]"),
    ({"visits": None}, "is missing input(s): visits"),
]


@pytest.mark.parametrize(("change", "message"), BAD_COLUMNS)
async def test_a_column_that_does_not_fit_is_refused_by_name(client, change, message):
    inputs = []
    for tensor in columns(mixed_frame(1, seed=34)):
        if tensor["name"] in change:
            if change[tensor["name"]] is None:
                continue
            tensor = {**tensor, **change[tensor["name"]]}
        inputs.append(tensor)
    for model in ("frame", "churn"):
        response = await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
        assert response.status_code == 400
        assert message in response.json()["error"]


async def test_bytes_that_are_not_utf8_text_are_refused(client):
    header = {
        "inputs": [
            {"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.0]},
            {"name": "visits", "datatype": "INT64", "shape": [1], "data": [1]},
            {
                "name": "plan",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": 6},
            },
        ]
    }
    head = json.dumps(header).encode()
    body = head + struct.pack("<I", 2) + b"\xff\xfe"
    response = await client.post(
        "/v2/models/frame/infer",
        content=body,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "input 'plan' holds bytes that are not UTF-8 text (element 0); "
        "the model takes strings"
    }


@pytest.mark.parametrize("model", ["frame", "churn"])
async def test_columns_of_different_lengths_are_a_400_naming_them(client, model):
    inputs = [
        {"name": "amount", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]},
        {"name": "visits", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        {"name": "plan", "datatype": "BYTES", "shape": [3], "data": ["pro", "basic", "team"]},
    ]
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "the columns have different lengths (amount: 3, visits: 2, plan: 3); "
        "every input of a table needs one value per row"
    }


@pytest.mark.parametrize("model", ["frame", "churn"])
async def test_nan_a_model_refuses_is_a_400_through_invocations_csv(client, model):
    """An empty float cell is NaN; a logistic regression refuses NaN: the client's mistake."""
    body = "amount,visits,plan\n12.5,3,pro\n,4,basic\n"
    with pytest.raises(ValueError, match="NaN") as reference:
        churn_pipeline().predict(
            pd.DataFrame({"amount": [12.5, np.nan], "visits": [3, 4], "plan": ["pro", "basic"]})
        )
    response = await client.post(
        f"/models/{model}/invocations", content=body, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"model {model!r} refused the input: ")
    assert str(reference.value).splitlines()[0] in message
    assert message.endswith("(NaN in input 'amount' row 1)")
