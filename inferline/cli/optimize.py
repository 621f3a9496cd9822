"""``inferline optimize``: a registered version as ONNX (or int8), checked, then registered."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from inferline.optimize import Report

__all__ = ["optimize"]

console = Console()


def optimize(
    name: str,
    version: Annotated[
        str | None,
        typer.Option(help="Version number or alias.", show_default="production, else the latest"),
    ] = None,
    quantize: Annotated[
        bool, typer.Option("--quantize", help="Quantize a neural network's weights to int8.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Features (Parquet, CSV, JSON lines) to compare outputs on; "
            "also profiled as the new version's reference.",
            show_default="rows drawn from the version's reference profile",
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="--data's feature columns, in the model's order: a,b,c."),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(help="--data columns that are not features (an id, the label)."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Largest output change allowed: absolute within ±1, relative beyond.",
            show_default="1e-4; 5e-2 with --quantize",
        ),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Convert, check and measure; register nothing.")
    ] = False,
) -> None:
    """Convert a version to ONNX, check it answers like the source, register it as a new version.

    scikit-learn, XGBoost and LightGBM versions convert to ONNX; --quantize makes
    int8 weights (an ONNX neural network, or an sklearn MLP). Acts on the local
    registry (INFERLINE_HOME, INFERLINE_REGISTRY_URL), not through --server.
    """
    from inferline.cli.models import reference_option
    from inferline.errors import InferlineError
    from inferline.optimize import optimize as run
    from inferline.registry.store import Registry
    from inferline.settings import Settings

    reference = reference_option(data, features, exclude)
    settings = Settings()
    registry = Registry(settings.registry_database, settings.artifact_root)

    async def main() -> Report:
        with ThreadPoolExecutor(2, thread_name_prefix="inferline-cli") as executor:
            return await run(
                registry,
                name,
                executor,
                version=version,
                quantize=quantize,
                data=reference,
                tolerance=tolerance,
                alias=alias,
                dry_run=dry_run,
            )

    try:
        report = asyncio.run(main())
    except InferlineError as exc:
        typer.echo(f"inferline: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        registry.close()
    _print(report)


def _print(report: Report) -> None:
    source = report.source
    if report.warning:
        typer.echo(f"warning: {report.warning}", err=True)
    typer.echo(
        f"{source.name} version {source.version} ({source.runtime}) → {report.optimization}: "
        f"outputs checked on {report.reference}, tolerance {report.tolerance:g}"
    )
    before, after = report.before, report.after
    table = Table("", "before", "after", "change")
    table.add_row("runtime", before.runtime, after.runtime, "")
    table.add_row(
        "latency, 1 row (median)",
        _seconds(before.latency_ms),
        _seconds(after.latency_ms),
        _ratio(before.latency_ms, after.latency_ms, "faster", "slower"),
    )
    table.add_row(
        "throughput, batches of 64",
        f"{before.throughput:,.0f} rows/s",
        f"{after.throughput:,.0f} rows/s",
        _ratio(after.throughput, before.throughput, "more", "less"),
    )
    table.add_row(
        "size",
        _bytes(before.size),
        _bytes(after.size),
        f"{(after.size - before.size) / max(before.size, 1):+.0%}",
    )
    for check in report.checks:
        table.add_row(f"output {check.name}", "", check.summary(), "ok" if check.ok else "FAILED")
    table.add_row("signature", "", "same" if report.signature_kept else "CHANGED", "")
    console.print(table)
    if report.registered is None:
        typer.echo("dry run: nothing registered")
        return
    new = report.registered
    aliases = f" ({', '.join(new.aliases)})" if new.aliases else ""
    typer.echo(
        f"registered {new.name} version {new.version}{aliases} (onnx), "
        f"tagged optimized_from={source.version}"
    )


def _seconds(ms: float) -> str:
    return f"{ms:.2f} ms" if ms >= 1 else f"{ms * 1e3:.1f} µs"


def _ratio(good: float, bad: float, better: str, worse: str) -> str:
    if good <= 0 or bad <= 0:
        return ""
    ratio = good / bad
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
