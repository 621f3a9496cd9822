"""Spark: the engine equals the local one row for row, and the UDF works in a user's job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from inferline.batch import score
from inferline.batch.io import Writer
from tests.batch.conftest import FEATURES, demo_table, features_of, forest_reference

pytestmark = pytest.mark.spark


def _with_nulls(table: pa.Table, every: int) -> pa.Table:
    column = table.column("f3").combine_chunks()
    mask = np.arange(table.num_rows) % every == 1
    return table.set_column(4, "f3", pa.array(column.to_numpy(), mask=mask))


def test_spark_engine_equals_local_engine(spark: Any, model_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(
        _with_nulls(demo_table(2500, seed=1), 400), inputs / "a.parquet", row_group_size=700
    )
    csv = _with_nulls(demo_table(900, seed=2), 250)
    writer = Writer(inputs / "b.csv", "csv", csv.schema)
    writer.write(csv)
    writer.close()
    options: dict[str, Any] = {"model_dir": model_dir, "keep": ["id"], "chunk_rows": 512}
    local = score("demo", inputs, tmp_path / "local.parquet", **options)
    remote = score("demo", inputs, tmp_path / "spark.parquet", engine="spark", **options)
    assert (remote.rows, remote.scored, remote.rejected) == (
        local.rows,
        local.scored,
        local.rejected,
    )
    assert local.rejected == 7 + 4
    ours = pq.read_table(tmp_path / "local.parquet")
    theirs = ds.dataset(tmp_path / "spark.parquet").to_table().replace_schema_metadata(None)
    assert theirs.equals(ours)
    assert (tmp_path / "spark.rejects.jsonl").read_text() == (
        tmp_path / "local.rejects.jsonl"
    ).read_text()
    first = (tmp_path / "local.rejects.jsonl").read_text().splitlines()[0]
    assert first == '{"row":1,"error":"column \'f3\' is null","id":1}'


def test_udf_inside_a_user_spark_job(spark: Any, model_dir: Path, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    from inferline.spark import udf

    table = demo_table(1000, seed=4)
    pq.write_table(table, tmp_path / "events.parquet")
    events = spark.read.parquet(str(tmp_path / "events.parquet"))
    predict = udf("demo", model_dir=model_dir)
    scored = (
        events.withColumn("prediction", predict(*FEATURES))
        .select("id", "prediction.*")
        .orderBy("id")
        .toPandas()
    )
    expected = forest_reference(model_dir, features_of(table))
    assert list(scored.columns) == ["id", "label", "probabilities_0", "probabilities_1"]
    np.testing.assert_array_equal(scored["label"].to_numpy(), expected["label"])
    np.testing.assert_array_equal(
        scored["probabilities_1"].to_numpy(), expected["probabilities"][:, 1]
    )
    # A struct argument maps columns by name, as files do; bad rows can come back as null.
    ranged = spark.createDataFrame(
        [(0, 0.5, 5.0, 0.0), (1, 2.0, 5.0, 0.0), (2, None, 1.0, 1.0)],
        "id int, a double, b double, c double",
    )
    lenient = udf("ranged", model_dir=model_dir, errors="null")
    rows = (
        ranged.select("id", lenient(F.struct("a", "b", "c")).alias("p"))
        .orderBy("id")
        .select("id", "p.y", "p.error")
        .collect()
    )
    assert [tuple(row) for row in rows] == [
        (0, 5.5, None),
        (1, None, "input 'x' feature 0 at index [0, 0] is 2.0, above the allowed maximum 1.0"),
        (2, None, "column 'a' is null"),
    ]
    strict = udf("ranged", model_dir=model_dir)
    with pytest.raises(Exception, match="above the allowed maximum"):  # Spark wraps the error
        ranged.select(strict(F.struct("a", "b", "c"))).collect()


def test_udf_refuses_errors_null_when_an_output_is_named_error(spark: Any, tmp_path: Path) -> None:
    """The struct would carry two "error" fields; refused before any row is scored."""
    from inferline.errors import InvalidInput
    from inferline.spark import udf

    (tmp_path / "flagged" / "1").mkdir(parents=True)
    (tmp_path / "flagged" / "model-settings.yaml").write_text(
        "runtime: python\n"
        "inputs:\n  - {name: x, datatype: FP64, shape: [-1, 2]}\n"
        "outputs:\n  - {name: score, datatype: FP64, shape: [-1]}\n"
        "  - {name: error, datatype: FP64, shape: [-1]}\n"
    )
    (tmp_path / "flagged" / "1" / "model.py").write_text(
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        x = inputs['x']\n"
        "        return {'score': x.sum(axis=1), 'error': x[:, 0] - x[:, 1]}\n"
    )
    with pytest.raises(InvalidInput, match=r"output column named 'error'.*errors=\"raise\""):
        udf("flagged", model_dir=tmp_path, errors="null")
    frame = spark.createDataFrame([(1.0, 0.5)], "a double, b double")
    strict = udf("flagged", model_dir=tmp_path)  # errors="raise" adds no field: no clash
    row = frame.select(strict("a", "b").alias("p")).select("p.score", "p.error").collect()[0]
    assert tuple(row) == (1.5, 0.5)
