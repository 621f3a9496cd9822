"""Batch scoring: files in, predictions out, the same answers as online serving.

    from inferline.batch import score
    summary = score("fraud", "transactions.parquet", "scored.parquet", keep=("id",))
    summary.exit_code   # 0 complete, 3 some rows rejected (see summary.rejects)

``engine="spark"`` runs the same chunks on Apache Spark; :func:`inferline.spark.udf`
scores columns inside a Spark job of your own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from inferline.batch.columns import Plan, make_plan
from inferline.batch.io import read_schema
from inferline.batch.job import COMPLETE, FAILED, PARTIAL, Job, Summary, make_job
from inferline.batch.progress import make_progress
from inferline.batch.scoring import ModelHost, Scorer
from inferline.batch.source import locate, model_folder
from inferline.settings import Settings

__all__ = ["COMPLETE", "FAILED", "PARTIAL", "Summary", "score"]

logger = logging.getLogger(__name__)

#: The data plane's element limit protects servers from clients; a batch job sets its own.
_NO_LIMIT = 1 << 62


def score(
    model: str,
    source: str | Path | Sequence[str | Path],
    dest: str | Path,
    *,
    version: str | None = None,
    model_dir: str | Path | None = None,
    keep: Sequence[str] = (),
    features: Sequence[str] | None = None,
    format: str | None = None,
    input_format: str | None = None,
    chunk_rows: int = 65536,
    rejects: str | Path | None = None,
    resume: bool = False,
    engine: Literal["local", "spark"] = "local",
    spark_master: str | None = None,
    workers: int | None = None,
    progress: bool | None = False,
    settings: Settings | None = None,
) -> Summary:
    """Score every row of ``source`` (file, folder or glob) with a model into ``dest``.

    ``dest`` ending in ``/`` (or an existing folder) gets one output per input file;
    otherwise it is one file. Rows that fail validation go to ``rejects`` (default:
    beside the output) as JSON lines with their 0-based row number and the error.

    Without ``version``: the registry's ``production`` alias, else its latest version;
    with a model folder, its newest version. The summary says which, and how.
    """
    server = settings or Settings()
    folder, asked, chosen = model_folder(model_dir, server, model, version)
    model_settings, resolved, version_dir = locate(model, asked, folder)
    if chosen is None:
        chosen = "as asked" if version else f"newest in {folder}"
    logger.info("batch: scoring with %s version %s (%s)", model, resolved, chosen)
    job = make_job(
        model,
        resolved,
        source,
        dest,
        keep=tuple(keep),
        features=tuple(features) if features else None,
        out_format=format,
        input_format=input_format,
        chunk_rows=chunk_rows,
        rejects=rejects,
    )
    plane_settings = server.model_copy(update={"model_dir": folder, "max_elements": _NO_LIMIT})
    host = ModelHost(model_settings, resolved, version_dir, plane_settings).start()
    try:
        label = f"{model} version {resolved} ({chosen})"
        summary = _run(job, host, folder, engine, spark_master, resume, progress, workers, label)
    finally:
        host.close()
    return dataclasses.replace(summary, version=resolved, chosen=chosen)


def _run(
    job: Job,
    host: ModelHost,
    folder: Path,
    engine: str,
    spark_master: str | None,
    resume: bool,
    progress: bool | None,
    workers: int | None,
    label: str,
) -> Summary:
    plan, schema = plan_job(host, job)
    if engine == "spark":
        from inferline.batch.spark import run_spark

        return run_spark(job, plan, schema, folder, master=spark_master, resume=resume)
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; choose local or spark")
    from inferline.batch.local import run_local

    return run_local(
        job,
        Scorer(host, plan, plan.output_schema(schema)),
        resume=resume,
        progress=make_progress(progress, label),
        workers=workers or os.cpu_count() or 2,
    )


def plan_job(host: ModelHost, job: Job) -> tuple[Plan, Any]:
    """The column mapping, from the first input file's schema, and that schema."""
    schema = read_schema(job.files[0], job.formats[0])
    plan = make_plan(host.inputs, host.output_widths(), schema.names, job.keep, job.features)
    if job.formats[0] != "parquet":
        schema = read_schema(job.files[0], job.formats[0], plan.text_types(job.formats[0]))
    return plan, schema
