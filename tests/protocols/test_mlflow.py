"""MLflow scoring protocol in process: every accepted format answers what MLflow answers."""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from tests.tabular_models import (
    mixed_frame,
    mlflow_answer,
    mlflow_invocations,
    mlflow_predict,
    serve_folder,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

JSON = "application/json"
CSV = "text/csv"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tabular_dir):
    async with serve_folder(tabular_dir) as (_, http):
        yield http


def bodies(frame: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    """The same rows in every format ``/invocations`` takes: (body, content type)."""

    def dump(doc: Any) -> bytes:
        return json.dumps(doc).encode()

    return {
        "dataframe_split": (dump({"dataframe_split": frame.to_dict(orient="split")}), JSON),
        "dataframe_records": (dump({"dataframe_records": frame.to_dict(orient="records")}), JSON),
        "instances": (dump({"instances": frame.to_dict(orient="records")}), JSON),
        "inputs": (dump({"inputs": frame.to_dict(orient="list")}), JSON),
        "csv": (frame.to_csv(index=False).encode(), CSV),
    }


FORMATS = ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["churn", "scorer", "scaled"])
async def test_every_format_answers_what_mlflow_answers(client, tabular_dir, name, fmt):
    frame = mixed_frame(12, seed=11)
    body, content_type = bodies(frame)[fmt]
    path = tabular_dir / name / "1"

    response = await client.post(
        f"/models/{name}/invocations", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 200, response.text
    assert response.headers["inferline-model-version"] == "1"
    # pyfunc.load_model(path).predict(df) in process, serialised by MLflow's scoring server ...
    assert response.json() == mlflow_answer(path, frame)
    # ... and MLflow's own scoring code parsing the very same body.
    assert mlflow_invocations(path, body, content_type) == (200, response.json())


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_tensor_model_takes_rows_in_every_format(client, tabular_dir, fmt):
    x = np.random.default_rng(12).normal(size=(7, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    body, content_type = bodies(frame)[fmt]
    if fmt in ("instances", "inputs"):  # the tensor itself, as rows
        body = json.dumps({fmt: x.tolist()}).encode()

    response = await client.post(
        "/models/matrix/invocations", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 200, response.text
    expected = mlflow_predict(tabular_dir / "matrix" / "1", x)
    assert response.json() == {"predictions": expected.tolist()}


async def test_with_one_model_plain_invocations_works(tabular_dir, tmp_path):
    shutil.copytree(tabular_dir / "churn", tmp_path / "churn")
    frame = mixed_frame(5, seed=13)
    body, _ = bodies(frame)["dataframe_split"]
    async with serve_folder(tmp_path) as (_, http):
        response = await http.post("/invocations", content=body, headers={"content-type": JSON})
    assert response.status_code == 200, response.text
    assert response.json() == mlflow_answer(tabular_dir / "churn" / "1", frame)


async def test_with_several_models_the_path_or_header_chooses(client, tabular_dir):
    frame = mixed_frame(4, seed=14)
    body, _ = bodies(frame)["dataframe_records"]
    expected = mlflow_answer(tabular_dir / "churn" / "1", frame)

    ambiguous = await client.post("/invocations", content=body)
    assert ambiguous.status_code == 400
    assert ambiguous.json()["error_code"] == "BAD_REQUEST"
    assert (
        "5 models are served (churn, frame, matrix, scaled, scorer)"
        in (ambiguous.json()["message"])
    )
    assert "inferline-model" in ambiguous.json()["message"]

    by_header = await client.post(
        "/invocations", content=body, headers={"inferline-model": "churn"}
    )
    by_version = await client.post("/models/churn/versions/1/invocations", content=body)
    assert by_header.json() == expected
    assert by_version.json() == expected


async def test_an_unknown_model_or_version_is_404_in_mlflow_shape(client):
    body = json.dumps({"inputs": {"amount": [1.0]}}).encode()
    for path in ("/models/nope/invocations", "/models/churn/versions/9/invocations"):
        response = await client.post(path, content=body)
        assert response.status_code == 404
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    unknown = await client.post("/invocations", content=body, headers={"inferline-model": "nope"})
    assert unknown.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "model 'nope' not found",
    }


async def test_params_are_ignored_unless_the_model_declares_them(client, tabular_dir):
    frame = mixed_frame(6, seed=15)
    split = {"dataframe_split": frame.to_dict(orient="split")}

    ignored = await client.post("/models/churn/invocations", json={**split, "params": {"x": 1}})
    assert ignored.json() == mlflow_answer(tabular_dir / "churn" / "1", frame)

    defaults = await client.post("/models/scaled/invocations", json=split)
    assert defaults.json() == mlflow_answer(tabular_dir / "scaled" / "1", frame)

    refused = await client.post(
        "/models/scaled/invocations", json={**split, "params": {"scale": 2}}
    )
    assert refused.status_code == 400
    assert "declares params scale" in refused.json()["message"]


async def test_ping_health_and_version(client):
    for path in ("/ping", "/health"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.text == "\n"
    from inferline import __version__

    assert (await client.get("/version")).text == __version__


ROW = {"amount": 51.5, "visits": 2, "plan": "pro"}
MALFORMED = [
    (b"{", JSON, 400, "malformed JSON"),
    (b"[1, 2]", JSON, 400, "the body must be a JSON object, not a list"),
    ({"data": [[1]]}, JSON, 400, "exactly one of dataframe_split, dataframe_records, instances"),
    ({"inputs": {}, "instances": [ROW]}, JSON, 400, "it has: inputs, instances"),
    ({"dataframe_split": {"columns": ["amount"]}}, JSON, 400, "'dataframe_split' needs a 'data'"),
    (
        {"dataframe_split": {"columns": ["amount", "visits", "plan"], "data": [[1.0, 2]]}},
        JSON,
        400,
        "'dataframe_split' row 0 is not a list of 3 values",
    ),
    ({"dataframe_records": ROW}, JSON, 400, "'dataframe_records' must be a list of records"),
    (
        {"dataframe_records": [ROW, {"amount": 1.0, "plan": "pro"}]},
        JSON,
        400,
        "row 1 has keys ['amount', 'plan'], row 0 has ['amount', 'plan', 'visits']",
    ),
    (
        {"dataframe_records": [{**ROW, "amount": "much"}]},
        JSON,
        400,
        "input 'amount' is FP64; the request gives strings",
    ),
    (
        {"dataframe_records": [{**ROW, "visits": 1.5}]},
        JSON,
        400,
        "input 'visits' is INT64; the request gives numbers with a fraction",
    ),
    (
        {"dataframe_records": [{**ROW, "plan": 3}]},
        JSON,
        400,
        "input 'plan' is BYTES: each value must be a string, got int",
    ),
    ({"inputs": {"amount": [1.0], "visits": [1]}}, JSON, 400, "missing input(s): plan"),
    ({"instances": [{**ROW, "zip": "02134"}]}, JSON, 400, "unknown input 'zip'"),
    ({"instances": []}, JSON, 400, "'instances' must be a non-empty list"),
    ({"inputs": [[1.0, 2]]}, JSON, 400, "gives no input names, but the model takes 3 inputs"),
    ({"inputs": {"amount": [1.0]}, "params": [1]}, JSON, 400, "'params' must be a JSON object"),
    (b"amount,visits,plan\n1.0,2\n", CSV, 400, "CSV line 2 has 2 fields; the header has 3"),
    (b"amount,visits,plan\nmuch,2,pro\n", CSV, 400, "column 'amount' is FP64"),
    (b"amount,visits,plan\n1.0,2,pro\n", "text/plain", 415, "content type must be"),
    (b"{}", "application/json; format=pandas-split", 415, "content type parameters: format"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), MALFORMED)
async def test_malformed_payloads_get_a_precise_message_in_mlflow_shape(
    client, body, content_type, status, message
):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        "/models/churn/invocations", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert message in response.json()["message"]
    assert set(response.json()) == {"error_code", "message"}
    assert response.headers["x-request-id"]


async def test_float32_predictions_are_written_as_mlflow_writes_them(tmp_path):
    import mlflow.xgboost
    import xgboost
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"a": np.random.default_rng(16).normal(size=40), "b": np.arange(40.0)})
    regressor = xgboost.XGBRegressor(n_estimators=4).fit(frame, frame.a * 3)
    assert regressor.predict(frame).dtype == np.float32
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "model-settings.yaml").write_text("runtime: mlflow\n")
    path = tmp_path / "reg" / "1"
    signature = infer_signature(frame, regressor.predict(frame))
    mlflow.xgboost.save_model(regressor, str(path), signature=signature, pip_requirements=[])

    async with serve_folder(tmp_path) as (_, http):
        split = {"dataframe_split": frame.head(6).to_dict(orient="split")}
        response = await http.post("/invocations", json=split)

    # MLflow's encoder writes float32 values widened to float64 (0.1 as 0.10000000149011612).
    assert response.json() == mlflow_answer(path, frame.head(6))
