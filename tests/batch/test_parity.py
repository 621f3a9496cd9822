"""Parity: for the same rows, batch output equals what V2 REST answers, errors included."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inferline.batch import score
from tests.batch.conftest import demo_table, features_of


async def _infer(
    rest: httpx.AsyncClient, model: str, tensors: list[dict[str, Any]]
) -> httpx.Response:
    return await rest.post(f"/v2/models/{model}/infer", json={"inputs": tensors})


def _outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


async def test_demo_forest_batch_equals_rest(
    rest: httpx.AsyncClient, model_dir: Path, tmp_path: Path
) -> None:
    table = demo_table(64, seed=9)
    pq.write_table(table, tmp_path / "in.parquet")
    await asyncio.to_thread(
        score, "demo", tmp_path / "in.parquet", tmp_path / "out.parquet", model_dir=model_dir,
        keep=["id"], chunk_rows=16,
    )  # fmt: skip
    x = features_of(table)
    online = _outputs(
        await _infer(
            rest,
            "demo",
            [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ],
        )
    )
    batch = pq.read_table(tmp_path / "out.parquet")
    np.testing.assert_array_equal(batch.column("label").to_numpy(), online["label"])
    for j in range(2):
        np.testing.assert_array_equal(
            batch.column(f"probabilities_{j}").to_numpy(),
            online["probabilities"][:, j].astype(np.float32),
        )


async def test_kitchen_batch_equals_rest(
    rest: httpx.AsyncClient, model_dir: Path, tmp_path: Path
) -> None:
    rows = 10
    fp = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) / 8
    i64 = np.arange(rows * 2).reshape(rows, 2) - 7
    flag = (np.arange(rows) % 3 == 0).reshape(rows, 1)
    text = [f"Row {i}" for i in range(rows)]
    columns: dict[str, Any] = {f"fp_{j}": fp[:, j] for j in range(4)}
    columns.update({f"i64_{j}": i64[:, j] for j in range(2)})
    columns.update({"flag": flag[:, 0], "text": text})
    pq.write_table(pa.table(columns), tmp_path / "in.parquet")
    await asyncio.to_thread(
        score, "kitchen", tmp_path / "in.parquet", tmp_path / "out.parquet", model_dir=model_dir
    )
    online = _outputs(
        await _infer(
            rest,
            "kitchen",
            [
                {"name": "fp", "datatype": "FP32", "shape": [rows, 4], "data": fp.ravel().tolist()},
                {
                    "name": "i64",
                    "datatype": "INT64",
                    "shape": [rows, 2],
                    "data": i64.ravel().tolist(),
                },
                {
                    "name": "flag",
                    "datatype": "BOOL",
                    "shape": [rows, 1],
                    "data": flag.ravel().tolist(),
                },
                {"name": "text", "datatype": "BYTES", "shape": [rows, 1], "data": text},
            ],
        )
    )
    batch = pq.read_table(tmp_path / "out.parquet")
    np.testing.assert_array_equal(
        batch.column("fp_sum").to_numpy(), online["fp_sum"].astype(np.float32)
    )
    for j in range(2):
        np.testing.assert_array_equal(
            batch.column(f"i64_double_{j}").to_numpy(), online["i64_double"][:, j]
        )
    np.testing.assert_array_equal(batch.column("flag_not").to_numpy(), online["flag_not"][:, 0])
    assert batch.column("text_upper").to_pylist() == list(online["text_upper"][:, 0])


async def test_a_rejected_row_carries_the_error_rest_gives_it(
    rest: httpx.AsyncClient, model_dir: Path, tmp_path: Path
) -> None:
    rows = [[0.5, 5.0, 0.0], [0.5, 10.5, 0.0], [1.0, 0.0, -1.0]]
    table = pa.table({name: [r[j] for r in rows] for j, name in enumerate("abc")})
    pq.write_table(table, tmp_path / "in.parquet")
    summary = await asyncio.to_thread(
        score, "ranged", tmp_path / "in.parquet", tmp_path / "out.parquet", model_dir=model_dir
    )
    assert summary.exit_code == 3
    (reject,) = [json.loads(line) for line in summary.rejects.read_text().splitlines()]  # type: ignore[union-attr]
    response = await _infer(
        rest, "ranged", [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": rows[1]}]
    )
    assert response.status_code == 400
    assert reject == {"row": 1, "error": response.json()["error"]}
    good = [rows[0], rows[2]]
    online = _outputs(
        await _infer(
            rest,
            "ranged",
            [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [2, 3],
                    "data": [v for row in good for v in row],
                }
            ],
        )
    )
    assert pq.read_table(tmp_path / "out.parquet").column("y").to_pylist() == online["y"].tolist()
