"""TF-Serving REST / KServe V1 in process: row and columnar formats agree with V2."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from tests.tabular_models import mixed_frame, serve_folder

pytestmark = pytest.mark.asyncio(loop_scope="module")

V2_TYPES = {"amount": "FP64", "visits": "INT64", "plan": "BYTES"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tabular_dir):
    async with serve_folder(tabular_dir) as (_, http):
        yield http


async def v2_outputs(client, model: str, inputs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return {out["name"]: out["data"] for out in response.json()["outputs"]}


def v2_columns(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"name": c, "datatype": V2_TYPES[c], "shape": [len(frame)], "data": frame[c].tolist()}
        for c in frame.columns
    ]


@pytest.mark.parametrize(
    "path", ["/v1/models/churn:predict", "/v1/models/churn/versions/1:predict"]
)
async def test_rows_and_columns_equal_v2_for_a_table_model(client, path):
    frame = mixed_frame(9, seed=21)
    expected = (await v2_outputs(client, "churn", v2_columns(frame)))["predictions"]

    rows = await client.post(path, json={"instances": frame.to_dict(orient="records")})
    columns = await client.post(path, json={"inputs": frame.to_dict(orient="list")})

    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": expected}
    assert columns.json() == {"outputs": expected}
    assert rows.headers["inferline-model-version"] == "1"


async def test_several_outputs_come_back_as_row_objects_or_named_columns(client):
    frame = mixed_frame(6, seed=22)
    expected = await v2_outputs(client, "scorer", v2_columns(frame))

    rows = await client.post(
        "/v1/models/scorer:predict", json={"instances": frame.to_dict("records")}
    )
    columns = await client.post("/v1/models/scorer:predict", json={"inputs": frame.to_dict("list")})

    assert rows.json() == {
        "predictions": [
            {"score": s, "tier": t}
            for s, t in zip(expected["score"], expected["tier"], strict=True)
        ]
    }
    assert columns.json() == {"outputs": expected}


async def test_a_one_input_model_takes_plain_rows_and_one_tensor(client):
    x = np.random.default_rng(23).normal(size=(5, 4))
    v2 = [{"name": "input", "datatype": "FP64", "shape": [5, 4], "data": x.ravel().tolist()}]
    expected = (await v2_outputs(client, "matrix", v2))["predictions"]

    rows = await client.post("/v1/models/matrix:predict", json={"instances": x.tolist()})
    named_rows = await client.post(
        "/v1/models/matrix:predict",
        json={"signature_name": "serving_default", "instances": [{"input": r} for r in x.tolist()]},
    )
    columns = await client.post("/v1/models/matrix:predict", json={"inputs": x.tolist()})

    assert rows.json() == {"predictions": expected}
    assert named_rows.json() == {"predictions": expected}
    assert columns.json() == {"outputs": expected}


async def test_bytes_may_travel_as_b64_objects(client):
    frame = mixed_frame(4, seed=24)
    expected = (await v2_outputs(client, "scorer", v2_columns(frame)))["tier"]
    instances = [
        {**row, "plan": {"b64": base64.b64encode(row["plan"].encode()).decode()}}
        for row in frame.to_dict(orient="records")
    ]
    response = await client.post("/v1/models/scorer:predict", json={"instances": instances})
    assert [p["tier"] for p in response.json()["predictions"]] == expected


async def test_model_status_and_list(client):
    available = {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    status = await client.get("/v1/models/churn")
    assert status.json() == {"model_version_status": [available], "name": "churn", "ready": True}
    one = await client.get("/v1/models/churn/versions/1")
    assert one.json()["model_version_status"] == [available]
    listed = await client.get("/v1/models")
    assert listed.json() == {"models": ["churn", "frame", "matrix", "scaled", "scorer"]}


async def test_an_unknown_model_or_version_is_404(client):
    for response in (
        await client.get("/v1/models/nope"),
        await client.get("/v1/models/churn/versions/7"),
        await client.post("/v1/models/nope:predict", json={"instances": [1]}),
    ):
        assert response.status_code == 404
        assert set(response.json()) == {"error"}


ROW = {"amount": 51.5, "visits": 2, "plan": "pro"}
MALFORMED = [
    ("churn", b"{", "malformed JSON"),
    ("churn", b'"rows"', "the body must be a JSON object, not a str"),
    ("churn", {"rows": [ROW]}, 'exactly one of "instances" (row format) or "inputs"'),
    ("churn", {"instances": [ROW], "inputs": {}}, 'exactly one of "instances"'),
    ("churn", {"instances": {"amount": 1}}, '"instances" must be a non-empty list'),
    ("churn", {"instances": []}, '"instances" must be a non-empty list'),
    ("churn", {"instances": [ROW, {"amount": 1.0}]}, "row 1 has keys ['amount'], row 0 has"),
    ("churn", {"instances": [{**ROW, "age": 3}]}, "unknown input 'age'"),
    ("churn", {"instances": [[1.0, 2, "pro"]]}, "the model takes 3 inputs (amount, visits, plan)"),
    ("churn", {"inputs": [1.0, 2]}, '"inputs" must be an object naming them'),
    ("churn", {"inputs": {**ROW, "visits": "two"}}, "input 'visits' is INT64; the request gives strings"),
    ("churn", {"instances": [{**ROW, "plan": {"b64": "%%%"}}]}, "'b64' is not valid base64"),
    ("churn", {"signature_name": "classify", "instances": [ROW]}, "signature_name 'classify'"),
    ("matrix", {"instances": [[1.0, 2.0, 3.0, 4.0], [1.0]]}, "rows have different lengths"),
    ("matrix", {"instances": [[1.0, 2.0]]}, "input 'input' has shape [1, 2]; the model expects [-1, 4]"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body", "message"), MALFORMED)
async def test_malformed_payloads_get_400_and_a_precise_error(client, model, body, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(f"/v1/models/{model}:predict", content=content)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("verb", ["classify", "regress"])
@pytest.mark.parametrize("prefix", ["/v1/models/churn", "/v1/models/churn/versions/1"])
async def test_classify_and_regress_are_501_pointing_to_predict(client, prefix, verb):
    body = {"examples": [ROW]}
    response = await client.post(f"{prefix}:{verb}", json=body)
    assert response.status_code == 501, response.text
    message = response.json()["error"]
    assert message.startswith(f":{verb} is not served")
    assert ":predict" in message
    unknown = await client.post(f"/v1/models/nope:{verb}", json=body)
    assert unknown.status_code == 404
