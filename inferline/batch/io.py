"""Read Parquet, CSV and JSON lines in chunks of a fixed row count; write them back.

Everything is pyarrow, imported on first use so ``import inferline`` stays light.
Chunks are exact (``chunk_rows`` rows, the last of a file shorter) and never cross
files, so the same input always splits the same way: checkpoints and the Spark
engine rely on it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

__all__ = [
    "FORMATS",
    "Writer",
    "expand",
    "format_of",
    "jsonl_bytes",
    "pyarrow",
    "read_chunks",
    "read_schema",
    "replace",
    "row_count",
]

FORMATS = ("parquet", "csv", "jsonl")
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
EXTENSION = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
#: Bytes pyarrow parses at a time for CSV and JSON lines (bounded memory).
_BLOCK_BYTES = 4 << 20


def pyarrow() -> Any:
    """The pyarrow module, or an ImportError that names the extra to install."""
    try:
        import pyarrow as pa
    except ImportError as exc:  # pragma: no cover - the dev venv has it
        raise ImportError("batch scoring needs pyarrow: pip install 'inferline[batch]'") from exc
    return pa


def format_of(path: Path, explicit: str | None = None) -> str:
    """The file format: ``explicit`` when given, else from the suffix."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"unknown format {explicit!r}; choose one of {', '.join(FORMATS)}")
        return explicit
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; pass --format/--input-format "
            f"({', '.join(FORMATS)})"
        )
    return found


def expand(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Input files: a file, a folder (its data files, recursively) or a glob; sorted."""
    if not isinstance(source, str | Path):
        return [path for item in source for path in expand(item)]
    text = str(source)
    if glob.has_magic(text):
        found = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
    elif Path(text).is_dir():
        found = sorted(
            p
            for p in Path(text).rglob("*")
            if p.is_file()
            and p.suffix.lower() in _SUFFIXES
            and not any(part.startswith((".", "_")) for part in p.relative_to(text).parts)
        )
    elif Path(text).is_file():
        found = [Path(text)]
    else:
        raise FileNotFoundError(f"input {text} does not exist")
    if not found:
        raise FileNotFoundError(f"input {text} matches no data files")
    return found


def row_count(path: Path, fmt: str) -> int | None:
    """Rows in a Parquet file from its footer; None for text formats (unknown until read)."""
    if fmt != "parquet":
        return None
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def read_schema(path: Path, fmt: str, types: dict[str, Any] | None = None) -> Any:
    """The Arrow schema of a file (text formats: as inferred from the first block)."""
    pyarrow()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow
    return _open_text(path, fmt, None, types).schema


def read_chunks(
    path: Path,
    fmt: str,
    chunk_rows: int,
    *,
    columns: Sequence[str] | None = None,
    types: dict[str, Any] | None = None,
    start_row: int = 0,
    max_rows: int | None = None,
) -> Iterator[Any]:
    """Tables of exactly ``chunk_rows`` rows from ``start_row`` on (the last may be shorter).

    ``types`` fixes the Arrow type of some columns in text formats (CSV model columns
    are read as strings so one bad value rejects a row rather than the file).
    """
    pa = pyarrow()
    if fmt == "parquet":
        batches, schema, skip = _parquet_batches(path, chunk_rows, columns, start_row)
    else:
        reader = _open_text(path, fmt, columns, types)
        batches, schema, skip = iter(reader), reader.schema, start_row
    pending: list[Any] = []
    count = 0
    remaining = max_rows
    for batch in batches:
        if skip:
            dropped = min(skip, batch.num_rows)
            batch, skip = batch.slice(dropped), skip - dropped
        if remaining is not None:
            batch = batch.slice(0, remaining)
            remaining -= batch.num_rows
        while batch.num_rows:
            take = min(chunk_rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            batch, count = batch.slice(take), count + take
            if count == chunk_rows:
                yield pa.Table.from_batches(pending, schema)
                pending, count = [], 0
        if remaining == 0:
            break
    if count:
        yield pa.Table.from_batches(pending, schema)


def _parquet_batches(
    path: Path, chunk_rows: int, columns: Sequence[str] | None, start_row: int
) -> tuple[Iterator[Any], Any, int]:
    """Batches from the row group holding ``start_row`` on, and the rows still to skip."""
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    meta = handle.metadata
    first, before = 0, 0
    while first < meta.num_row_groups and before + meta.row_group(first).num_rows <= start_row:
        before += meta.row_group(first).num_rows
        first += 1
    schema = handle.schema_arrow
    if columns is not None:
        import pyarrow as pa

        schema = pa.schema([schema.field(name) for name in columns], schema.metadata)
    # One row group at a time: asked for all at once, pyarrow reads far ahead (~the file).
    batches = (
        batch
        for group in range(first, meta.num_row_groups)
        for batch in handle.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=columns)
    )
    return batches, schema, start_row - before


def _open_text(
    path: Path, fmt: str, columns: Sequence[str] | None, types: dict[str, Any] | None
) -> Any:
    pyarrow()
    if fmt == "csv":
        import pyarrow.csv as pcsv

        convert = pcsv.ConvertOptions(
            column_types=types or {},
            include_columns=list(columns) if columns is not None else None,
            strings_can_be_null=True,
        )
        return pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=_BLOCK_BYTES), convert_options=convert
        )
    import pyarrow as pa
    import pyarrow.json as pjson

    parse = pjson.ParseOptions(
        explicit_schema=pa.schema(list((types or {}).items())),
        unexpected_field_behavior="infer",
    )
    reader = pjson.open_json(
        path, read_options=pjson.ReadOptions(block_size=_BLOCK_BYTES), parse_options=parse
    )
    if columns is None:
        return reader
    return _Selected(reader, list(columns))


class _Selected:
    """A JSON reader narrowed to some columns (pyarrow's JSON reader has no projection)."""

    def __init__(self, reader: Any, columns: list[str]) -> None:
        self._reader = reader
        self._columns = columns
        missing = [name for name in columns if name not in reader.schema.names]
        if missing:
            raise ValueError(f"columns not found in the file: {', '.join(missing)}")
        import pyarrow as pa

        self.schema = pa.schema([reader.schema.field(name) for name in columns])

    def __iter__(self) -> Iterator[Any]:
        for batch in self._reader:
            yield batch.select(self._columns)


class Writer:
    """One output file of a fixed schema, written table by table."""

    def __init__(self, path: Path, fmt: str, schema: Any) -> None:
        pyarrow()
        self.path = path
        self.fmt = fmt
        self.schema = schema
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] | None = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer: Any = pq.ParquetWriter(path, schema, compression="snappy")
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(path, schema)
        else:
            self._handle = path.open("wb")

    def write(self, table: Any) -> None:
        if not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        if self._handle is not None:
            self._handle.write(jsonl_bytes(table))
        else:
            self._writer.write_table(table)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        else:
            self._writer.close()


def jsonl_bytes(table: Any) -> bytes:
    """One JSON object per row; float32 values keep their shortest float32 spelling."""
    pa = pyarrow()
    columns: list[Any] = []
    for column in table.columns:
        simple = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        if (simple or pa.types.is_boolean(column.type)) and column.null_count == 0:
            columns.append(column.to_numpy())
        else:
            columns.append(column.to_pylist())
    names = table.column_names
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    return b"".join(
        orjson.dumps(dict(zip(names, row, strict=True)), option=option, default=_jsonable)
        for row in zip(*columns, strict=True)
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def replace(source: Path, target: Path) -> None:
    """Move a finished file into place atomically (same file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
