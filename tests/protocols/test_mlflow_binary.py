"""MLflow ``binary`` columns over ``/invocations``, answered as MLflow's scoring server does.

MLflow base64-decodes a binary column's values in the DataFrame formats
(``dataframe_split``, ``dataframe_records``) and hands the model ``bytes``; in
``inputs`` / ``instances`` it passes the text's bytes as they are. The expected
answers come from MLflow's own ``scoring_server.invocations`` in process.
"""

from __future__ import annotations

import base64
import json
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest
import pytest_asyncio
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from tests.tabular_models import mlflow_invocations, serve_folder

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYLOADS = [b"\x00\xff\x10binary", b"hello", b""]


class Sizes(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Says what it was given: the type and length of each payload, its first byte, and
    the payload itself (MLflow writes a bytes output base64-encoded)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        values = list(model_input["payload"])
        return pd.DataFrame(
            {
                "is_bytes": [isinstance(v, bytes) for v in values],
                "size": [len(v) for v in values],
                "first": [v[0] if isinstance(v, bytes) and v else -1 for v in values],
                "name": list(model_input["name"]),
                "echo": values,
            }
        )


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-binary")
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, "payload"), ColSpec(DataType.string, "name")])
    )
    (root / "sizes").mkdir()
    (root / "sizes" / "model-settings.yaml").write_text("runtime: mlflow\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(root / "sizes" / "1"), python_model=Sizes(), signature=signature
        )
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(binary_dir: Path) -> Any:
    async with serve_folder(binary_dir) as (_, http):
        yield http


def _bodies() -> dict[str, dict[str, Any]]:
    encoded = [base64.b64encode(p).decode() for p in PAYLOADS]
    names = ["a", "b", "c"]
    return {
        "dataframe_split": {
            "dataframe_split": {
                "columns": ["payload", "name"],
                "data": [list(row) for row in zip(encoded, names, strict=True)],
            }
        },
        "dataframe_records": {
            "dataframe_records": [
                {"payload": e, "name": n} for e, n in zip(encoded, names, strict=True)
            ]
        },
        "inputs": {"inputs": {"payload": encoded, "name": names}},
        "instances": {
            "instances": [{"payload": e, "name": n} for e, n in zip(encoded, names, strict=True)]
        },
    }


@pytest.mark.parametrize("form", list(_bodies()))
async def test_binary_columns_answer_as_mlflow_does(client: Any, binary_dir: Path, form: str):
    body = json.dumps(_bodies()[form]).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status, expected = mlflow_invocations(binary_dir / "sizes" / "1", body, "application/json")
    assert status == 200, expected
    response = await client.post(
        "/invocations", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == expected
    if form.startswith("dataframe"):  # decoded: the model saw the raw bytes
        assert [row["size"] for row in expected["predictions"]] == [len(p) for p in PAYLOADS]


async def test_a_binary_column_that_is_not_base64_is_a_400(client: Any):
    body = {"dataframe_split": {"columns": ["payload", "name"], "data": [["abc", "a"]]}}
    response = await client.post("/invocations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("column 'payload' is binary: ")
