"""``inferline batch``: score files with a model, on this machine or on Spark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["batch"]


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


def batch(
    model: Annotated[str, typer.Argument(help="Model name.")],
    source: Annotated[
        str, typer.Argument(help="Input: a file, a folder, or a quoted glob ('exports/*.csv').")
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output file, or a folder (trailing /) for one file per input."
        ),
    ],
    version: Annotated[
        str | None,
        typer.Option(
            help="Model version: a number, or an alias of the registry.",
            show_default="the registry's production alias, else its latest version; "
            "with --model-dir, the newest version folder",
        ),
    ] = None,
    keep: Annotated[
        str | None, typer.Option(help="Columns copied to the output, e.g. id,customer.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="Feature columns of a one-input model (default: all not kept)."),
    ] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows read and scored at a time.")] = 65536,
    format: Annotated[
        str | None, typer.Option(help="Output format: parquet, csv or jsonl (default: suffix).")
    ] = None,
    input_format: Annotated[
        str | None, typer.Option(help="Input format when the suffix does not say.")
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Reject file (default: <output>.rejects.jsonl).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue a killed job from its last checkpoint.")
    ] = False,
    engine: Annotated[str, typer.Option(help="local or spark.")] = "local",
    spark_master: Annotated[
        str | None, typer.Option(help="Spark master URL (default: local[*]).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Folder of models (default: the registry).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML settings file (flags and env win).")
    ] = None,
) -> None:
    """Score every row of SOURCE with MODEL, writing predictions to --output.

    Exit codes:
    0 = complete, every row scored;
    3 = partial, some rows rejected (see the reject file);
    1 = failed (a killed job continues with --resume); 2 = bad usage.
    """
    from pydantic import ValidationError

    from inferline.batch import FAILED, score
    from inferline.errors import InferlineError
    from inferline.settings import Settings, settings_error

    if engine not in ("local", "spark"):
        raise typer.BadParameter("choose local or spark", param_hint="--engine")
    try:
        settings = Settings.load(config, model_dir=model_dir)
    except ValidationError as exc:
        typer.echo(f"inferline: {settings_error(exc)}", err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:
        typer.echo(f"inferline: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        summary = score(
            model,
            source,
            output,
            version=version,
            keep=_names(keep),
            features=_names(features) or None,
            format=format,
            input_format=input_format,
            chunk_rows=chunk_rows,
            rejects=rejects,
            resume=resume,
            engine="spark" if engine == "spark" else "local",
            spark_master=spark_master,
            progress=None,
            settings=settings,
        )
    except InferlineError as exc:
        typer.echo(f"inferline batch: {exc.message}", err=True)
        raise typer.Exit(FAILED) from exc
    except (ValueError, OSError, ImportError) as exc:
        typer.echo(f"inferline batch: {exc}", err=True)
        raise typer.Exit(FAILED) from exc
    outputs = ", ".join(str(p) for p in summary.outputs)
    typer.echo(
        f"scored {summary.scored:,} of {summary.rows:,} rows with {model} version "
        f"{summary.version} ({summary.chosen}) in {summary.seconds:.1f}s "
        f"({summary.scored / max(summary.seconds, 1e-9):,.0f} rows/s) -> {outputs}",
        err=True,
    )
    if summary.rejects is not None:
        typer.echo(f"rejected {summary.rejected:,} rows -> {summary.rejects}", err=True)
    raise typer.Exit(summary.exit_code)
