"""Readers and writers: file discovery, exact chunking, round trips for every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from inferline.batch.io import Writer, expand, format_of, jsonl_bytes, read_chunks, read_schema

TABLE = pa.table(
    {
        "id": pa.array(range(10), pa.int64()),
        "x": pa.array([0.5 * i for i in range(10)], pa.float64()),
        "p": pa.array([0.1 * i for i in range(10)], pa.float32()),
        "name": pa.array([f"n{i}" if i % 3 else None for i in range(10)], pa.string()),
        "flag": pa.array([i % 2 == 0 for i in range(10)], pa.bool_()),
    }
)


def write(path: Path, table: pa.Table = TABLE) -> Path:
    writer = Writer(path, format_of(path), table.schema)
    writer.write(table)
    writer.close()
    return path


def test_expand_file_folder_and_glob(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.csv", "sub/c.jsonl", "_SUCCESS", ".hidden/d.csv", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert expand(tmp_path / "a.csv") == [tmp_path / "a.csv"]
    assert expand(tmp_path) == [
        tmp_path / "a.csv",
        tmp_path / "b.parquet",
        tmp_path / "sub/c.jsonl",
    ]
    assert expand(str(tmp_path / "*.csv")) == [tmp_path / "a.csv"]
    assert expand([tmp_path / "b.parquet", tmp_path / "a.csv"]) == [
        tmp_path / "b.parquet",
        tmp_path / "a.csv",
    ]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand(tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="matches no data files"):
        expand(str(tmp_path / "*.orc"))


def test_format_of_suffix_and_override() -> None:
    assert format_of(Path("a.PARQUET")) == "parquet"
    assert format_of(Path("a.ndjson")) == "jsonl"
    assert format_of(Path("a.data"), "csv") == "csv"
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_of(Path("a.data"))
    with pytest.raises(ValueError, match="unknown format"):
        format_of(Path("a.csv"), "orc")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / f"t.{fmt}")
    back = pa.concat_tables(read_chunks(path, fmt, 4))
    assert back.column("id").to_pylist() == TABLE.column("id").to_pylist()
    assert back.column("name").to_pylist() == TABLE.column("name").to_pylist()
    assert back.column("flag").to_pylist() == TABLE.column("flag").to_pylist()
    np.testing.assert_array_equal(back.column("x").to_numpy(), TABLE.column("x").to_numpy())
    # float32 survives text formats exactly: written in its shortest spelling, read back.
    np.testing.assert_array_equal(
        back.column("p").to_numpy().astype(np.float32), TABLE.column("p").to_numpy()
    )
    if fmt == "parquet":
        assert back.equals(TABLE)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_chunks_are_exact_whatever_the_blocks(tmp_path: Path, fmt: str) -> None:
    table = pa.table({"id": pa.array(range(1000), pa.int64())})
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=137)  # groups that do not align with chunks
    else:
        write(path, table)
    chunks = list(read_chunks(path, fmt, 300))
    assert [c.num_rows for c in chunks] == [300, 300, 300, 100]
    assert pa.concat_tables(chunks).column("id").to_pylist() == list(range(1000))
    later = list(read_chunks(path, fmt, 300, start_row=600, max_rows=350))
    assert [c.num_rows for c in later] == [300, 50]
    assert later[0].column("id")[0].as_py() == 600


def test_csv_model_columns_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,x\n1,0.5\n2,abc\n3,\n")
    (chunk,) = read_chunks(path, "csv", 10, columns=["x"], types={"x": pa.string()})
    assert chunk.column_names == ["x"]
    assert chunk.column("x").to_pylist() == ["0.5", "abc", None]
    assert read_schema(path, "csv").field("id").type == pa.int64()


def test_jsonl_float32_spelling_and_nulls() -> None:
    table = pa.table(
        {"p": pa.array([0.1, 1.5], pa.float32()), "s": pa.array(["a", None]), "n": [1, 2]}
    )
    lines = jsonl_bytes(table).decode().splitlines()
    assert lines == ['{"p":0.1,"s":"a","n":1}', '{"p":1.5,"s":null,"n":2}']
    assert [json.loads(line)["p"] for line in lines] == [0.1, 1.5]


def test_csv_writer_header_and_values(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv")
    assert pcsv.read_csv(path).column_names == TABLE.column_names
