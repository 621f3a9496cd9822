"""Batch scoring on Apache Spark: the local engine's chunks as Spark tasks, and a pandas UDF.

``run_spark`` plans the same chunks the local engine reads (one task per Parquet
chunk, one per CSV or JSON-lines file, which has no random access) and runs them
through ``mapInArrow``, Arrow record batches with no pandas in between. Each task
reads its chunk with :mod:`inferline.batch.io` and scores it with the same
:class:`~inferline.batch.scoring.Scorer`, so Spark's output equals the local
engine's row for row. Each Python worker process loads the model once (a module
global keyed by model folder, name and version) from the folder the driver named.

:func:`udf` is for Spark jobs of your own, like MLflow's ``spark_udf``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Union

import numpy as np

from inferline.batch.columns import Plan, make_plan
from inferline.batch.io import jsonl_bytes, pyarrow, read_chunks, row_count
from inferline.batch.job import Job, Summary
from inferline.batch.scoring import ModelHost, Scorer
from inferline.batch.source import locate, model_folder
from inferline.errors import InvalidInput
from inferline.settings import Settings

__all__ = ["run_spark", "udf"]

_HOSTS: dict[tuple[str, str, str | None], ModelHost] = {}
_SPARK_FORMATS = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}
_META = ("__file", "__row", "__error")
#: The field ``udf(errors="null")`` adds to the returned struct for a row's message.
_ERROR_FIELD = "error"


def pyspark() -> ModuleType:
    """The pyspark module, or an ImportError that names the extra to install."""
    try:
        import pyspark as spark
    except ImportError as exc:
        raise ImportError("the Spark engine needs pyspark: pip install 'inferline[spark]'") from exc
    return spark


def host(model_dir: str, name: str, version: str | None) -> ModelHost:
    """This process's copy of the model, loaded on first use and kept for its lifetime."""
    key = (model_dir, name, version)
    found = _HOSTS.get(key)
    if found is None:
        settings, resolved, version_dir = locate(name, version, Path(model_dir))
        server = Settings(model_dir=Path(model_dir), max_elements=1 << 62)
        found = _HOSTS[key] = ModelHost(settings, resolved, version_dir, server).start()
    return found


@dataclass(frozen=True, slots=True)
class _Tasks:
    """What every task needs, shipped to the executors once per job."""

    model_dir: str
    model: str
    version: str
    plan: Plan
    schema: Any
    files: tuple[str, ...]
    formats: tuple[str, ...]
    chunk_rows: int
    #: (file index, first row, rows or None for the rest of the file) per task.
    slices: tuple[tuple[int, int, int | None], ...]


def run_spark(
    job: Job, plan: Plan, source: Any, model_dir: Path, *, master: str | None, resume: bool
) -> Summary:
    if resume:
        raise ValueError("--resume is for the local engine; Spark re-runs failed tasks itself")
    pa = pyarrow()
    pyspark()
    from pyspark.sql import SparkSession, functions
    from pyspark.sql.pandas.types import from_arrow_schema

    started = time.monotonic()
    owned = SparkSession.getActiveSession() is None
    spark = _session(master)
    output = plan.output_schema(source)
    meta = [pa.field("__file", pa.int32()), pa.field("__row", pa.int64())]
    tagged = pa.schema([*output, *meta, pa.field("__error", pa.string())])
    tasks = _Tasks(
        str(model_dir.resolve()),
        job.model,
        job.version,
        plan,
        output,
        tuple(str(f.resolve()) for f in job.files),
        job.formats,
        job.chunk_rows,
        tuple(_slices(job)),
    )
    count = len(tasks.slices)
    frame = spark.range(0, count, 1, numPartitions=max(count, 1))
    scored = frame.mapInArrow(lambda it: _score(tasks, it), from_arrow_schema(tagged)).persist()
    try:
        sizes = {int(f): int(n) for f, n in scored.groupBy("__file").count().collect()}
        offsets = np.concatenate([[0], np.cumsum([sizes.get(i, 0) for i in range(len(job.files))])])
        good = scored.filter(functions.col("__error").isNull()).drop(*_META)
        writer = good.write.mode("overwrite").format(_SPARK_FORMATS[job.out_format])
        if job.out_format == "csv":
            writer = writer.option("header", "true")
        writer.save(str(job.dest))
        bad = scored.filter(functions.col("__error").isNotNull()).orderBy("__file", "__row")
        rejected = _write_rejects(bad.select(*_META, *plan.keep), offsets, job.rejects)
    finally:
        scored.unpersist()
        if owned:
            spark.stop()
    rows = int(offsets[-1])
    return Summary(
        rows,
        rows - rejected,
        rejected,
        time.monotonic() - started,
        [job.dest],
        job.rejects if rejected else None,
    )


def _session(master: str | None) -> Any:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    url = master or "local[*]"
    builder = SparkSession.builder.appName("inferline batch").master(url)
    if url.startswith("local"):
        # Workers run this interpreter (and so this inferline); pyspark reads it from the
        # environment only. Everything stays on loopback.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.driver.host", "127.0.0.1")
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1")
    return builder.getOrCreate()


def _slices(job: Job) -> Iterator[tuple[int, int, int | None]]:
    for index, (path, fmt) in enumerate(zip(job.files, job.formats, strict=True)):
        rows = row_count(path, fmt)
        if rows is None:
            yield index, 0, None
            continue
        for start in range(0, max(rows, 1), job.chunk_rows):
            yield index, start, job.chunk_rows


def _score(tasks: _Tasks, batches: Iterator[Any]) -> Iterator[Any]:
    """One task: score the slices named in ``batches`` (Spark's ``range`` ids)."""
    pa = pyarrow()
    model = host(tasks.model_dir, tasks.model, tasks.version)
    scorer = Scorer(model, tasks.plan, tasks.schema)
    for batch in batches:
        for slice_id in batch.column(0).to_pylist():
            file, start, rows = tasks.slices[slice_id]
            fmt = tasks.formats[file]
            tables = read_chunks(
                Path(tasks.files[file]),
                fmt,
                tasks.chunk_rows,
                columns=tasks.plan.read_columns,
                types=tasks.plan.text_types(fmt) if fmt != "parquet" else None,
                start_row=start,
                max_rows=rows,
            )
            offset = start
            for table in tables:
                result = scorer.score(table, offset)
                offset += table.num_rows
                yield from _tagged(pa, tasks.schema, file, result.table, result.rejects)


def _tagged(pa: Any, schema: Any, file: int, table: Any, rejects: Any) -> Iterator[Any]:
    """Scored rows, then rejected ones, with the columns the driver sorts them out by."""
    n, r = table.num_rows, rejects.num_rows
    good = table.append_column("__file", pa.array(np.full(n, file, np.int32)))
    good = good.append_column("__row", pa.nulls(n, pa.int64()))
    good = good.append_column("__error", pa.nulls(n, pa.string()))
    columns = [
        rejects.column(f.name) if f.name in rejects.column_names else pa.nulls(r, f.type)
        for f in schema
    ]
    columns += [
        pa.array(np.full(r, file, np.int32)),
        rejects.column("row"),
        rejects.column("error"),
    ]
    bad = pa.Table.from_arrays(columns, schema=good.schema)
    yield from pa.concat_tables([good, bad]).to_batches()


def _write_rejects(frame: Any, offsets: Any, path: Path) -> int:
    pa = pyarrow()
    count = 0
    handle = None
    for row in frame.toLocalIterator():
        values = row.asDict()
        record = {
            "row": int(offsets[values["__file"]]) + values["__row"],
            "error": values["__error"],
        }
        record.update({k: v for k, v in values.items() if k not in _META})
        if handle is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("wb")
        handle.write(jsonl_bytes(pa.Table.from_pylist([record])))
        count += 1
    if handle is not None:
        handle.close()
    else:
        path.unlink(missing_ok=True)
    return count


def udf(
    model: str,
    version: str | None = None,
    *,
    model_dir: str | Path | None = None,
    errors: Literal["raise", "null"] = "raise",
) -> Any:
    """A pandas UDF scoring columns with the model, inside any Spark job.

    Call it with the model's columns (``df.select(udf(*feature_columns))``, in the
    signature's order) or with one struct column mapped by name, as files are
    (``udf(F.struct(*df.columns))``). It returns a struct of the prediction columns.
    A row that fails validation fails the task (``errors="raise"``) or gets null
    predictions and its message in an ``error`` field (``errors="null"``); a model
    with an output column named ``error`` is refused with ``errors="null"``, up front,
    as ``--keep`` refuses the reject file's field names.
    """
    pa = pyarrow()
    pyspark()
    import pandas as pd
    from pyspark.sql.pandas.functions import pandas_udf
    from pyspark.sql.pandas.types import from_arrow_schema

    path, version, _ = model_folder(model_dir, Settings(), model, version)
    folder = str(path.resolve())
    driver = host(folder, model, version)
    inputs, widths = driver.inputs, driver.output_widths()
    positional = _positional_names(inputs)
    plan = make_plan(inputs, widths, positional)
    outputs = plan.output_schema(pa.schema([]))
    if errors == "null" and _ERROR_FIELD in outputs.names:
        # The struct would hold two fields named "error": Spark keeps one, silently.
        raise InvalidInput(
            f"model {model!r} has an output column named {_ERROR_FIELD!r}, the field "
            f'errors="null" adds for the message; use errors="raise", or rename the output'
        )
    returned = (
        pa.schema([*outputs, pa.field(_ERROR_FIELD, pa.string())]) if errors == "null" else outputs
    )
    resolved = driver.version

    def predict(*columns: Any) -> Any:
        worker = host(folder, model, resolved)
        if len(columns) == 1 and isinstance(columns[0], pd.DataFrame):
            table = pa.Table.from_pandas(columns[0], preserve_index=False)
            used = make_plan(inputs, widths, table.column_names)
        else:
            arrays = [pa.Array.from_pandas(column) for column in columns]
            table = pa.Table.from_arrays(arrays, names=positional[: len(arrays)])
            used = plan
        result = Scorer(worker, used, outputs).score(table, 0)
        rejected = result.rejects.column("row").to_numpy()
        if len(rejected) and errors == "raise":
            first = result.rejects.slice(0, 1).to_pylist()[0]
            raise InvalidInput(f"row {first['row']} of the batch: {first['error']}")
        taken = np.full(table.num_rows, -1, dtype=np.int64)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rejected] = False
        taken[keep] = np.arange(int(keep.sum()))
        index = pa.array(taken, mask=taken < 0)
        frame = {name: result.table.column(name).take(index) for name in outputs.names}
        if errors == "null":
            messages = np.full(table.num_rows, None, dtype=object)
            messages[rejected] = result.rejects.column("error").to_pylist()
            frame[_ERROR_FIELD] = pa.array(messages, type=pa.string())
        return pa.table(frame).to_pandas()

    # pyspark reads the hints to pick the UDF kind: objects, not strings, and typing.Union,
    # the only union its hint parser recognises.
    union = Union[pd.Series, pd.DataFrame]  # noqa: UP007
    predict.__annotations__ = {"columns": union, "return": pd.DataFrame}
    return pandas_udf(predict, from_arrow_schema(returned))  # type: ignore[call-overload]


def _positional_names(inputs: list[Any]) -> list[str]:
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] > 1:
        return [f"_{i}" for i in range(inputs[0].shape[1])]
    names: list[str] = []
    for spec in inputs:
        shape = spec.shape
        width = shape[1] if len(shape) == 2 else 1
        names += [spec.name] if width == 1 else [f"{spec.name}_{i}" for i in range(width)]
    return names
