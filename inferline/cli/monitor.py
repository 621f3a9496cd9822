"""``inferline monitor``: quality and drift as a running server sees them, and profiles.

The windows live in the server process, so ``quality`` and ``drift`` read its API;
``profile`` writes a model folder's reference profile, for ``--model-dir`` serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Model quality and data drift, read from a running server; reference profiles."
)
console = Console()

Server = Annotated[
    str,
    typer.Option(help="The server's REST address (http://host:port).", envvar="INFERLINE_SERVER"),
]
Version = Annotated[str | None, typer.Option(help="A version number or alias; default: all.")]

_QUALITY = {
    "classification": ["accuracy", "precision", "recall", "f1", "roc_auc"],
    "regression": ["mae", "rmse", "r2"],
}


def _get(server: str, path: str, version: str | None) -> Any:
    import httpx

    params = {"version": version} if version else {}
    try:
        response = httpx.get(server.rstrip("/") + path, params=params, timeout=60)
    except httpx.HTTPError as exc:
        typer.echo(f"inferline: cannot reach {server}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.is_error:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        typer.echo(f"inferline: {message}", err=True)
        raise typer.Exit(1)
    return response


@app.command()
def quality(model: str, server: Server = "http://127.0.0.1:8080", version: Version = None) -> None:
    """Accuracy, precision, recall, F1, ROC AUC (classifiers) or MAE, RMSE, R² (regressors)."""
    reports = _get(server, f"/api/v1/models/{model}/quality", version).json()["versions"]
    for report in reports:
        metrics = report.get("metrics", {})
        task = report.get("task", "classification")
        console.print(f"{model} version {report['version']}: {task}, {report['pairs']} pairs")
        table = Table("metric", "value")
        for name in _QUALITY.get(task, []):
            value = metrics.get(name)
            table.add_row(name, "-" if value is None else f"{value:.4f}")
        console.print(table)
        if not report["pairs"]:
            console.print("no feedback yet: POST /api/v1/feedback {request_id, truth}")


@app.command()
def drift(
    model: str,
    server: Server = "http://127.0.0.1:8080",
    version: Version = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write the HTML report (histograms) here.")
    ] = None,
) -> None:
    """Drift per feature and prediction against the reference profile, and skew."""
    reports = _get(server, f"/api/v1/models/{model}/drift", version).json()["versions"]
    for report in reports:
        _print_drift(model, report)
    if html is not None:
        page = _get(server, f"/api/v1/models/{model}/drift/report.html", version).text
        html.write_text(page, encoding="utf-8")
        console.print(f"report written to {html}")


def _print_drift(model: str, report: dict[str, Any]) -> None:
    title = f"{model} version {report['version']}"
    if report.get("status") != "ok":
        console.print(f"{title}: no drift verdict ({report.get('status', 'no data')})")
        _print_skew(report)
        return
    console.print(title)
    table = Table("column", "kind", "method", "score", "threshold", "drifted")
    for kind, key in (("input", "features"), ("prediction", "predictions")):
        for name, result in report[key].items():
            drifted = "[bold red]yes[/]" if result["drifted"] else "no"
            table.add_row(
                name,
                kind,
                result["method"],
                f"{result['score']:.4g}",
                f"{result['threshold']:g}",
                drifted,
            )
    console.print(table)
    verdict = "DATASET DRIFT" if report["dataset_drift"] else "no dataset drift"
    console.print(
        f"{report['rows']} rows; {len(report['drifted'])} of {len(report['features'])} "
        f"features drifted ({report['share']:.0%}): {verdict}; "
        f"{len(report['prediction_drifted'])} of {len(report['predictions'])} prediction "
        "columns drifted"
    )
    _print_skew(report)


def _print_skew(report: dict[str, Any]) -> None:
    skew = report.get("skew") or {}
    if "skewed" in skew:
        found = ", ".join(skew["features"]) or "none"
        block = skew.get("block", 1)
        console.print(f"training/serving skew (block {block}, {skew['rows']} rows): {found}")
        first = skew.get("first") or {}
        if first and first.get("block") != block:
            was = ", ".join(first["features"]) or "none"
            console.print(f"  first block ({first['rows']} rows): {was}")
    elif skew:
        console.print(f"training/serving skew: {skew.get('status')}")


@app.command()
def profile(
    folder: Annotated[
        Path,
        typer.Argument(help="A model's folder: its model-settings.yaml and version folders."),
    ],
    data: Annotated[
        Path, typer.Option(help="Reference (training) data: Parquet, CSV or JSON lines.")
    ],
    version: Annotated[
        str | None, typer.Option(help="The version folder to profile.", show_default="newest")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="The data's feature columns, in the model's order: a,b,c."),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(help="Data columns that are not features (an id, the label)."),
    ] = None,
) -> None:
    """Write <folder>/<version>/reference-profile.json: drift and skew for --model-dir serving.

    The same profile ``models register --reference`` stores in the registry: the
    features' bins and frequencies, and the model's predictions on them (the model is
    loaded and run here). A running server picks it up at its next monitoring round.
    """
    import asyncio

    from inferline.cli.models import reference_option
    from inferline.errors import InferlineError

    reference = reference_option(data, features, exclude)
    if reference is None:  # pragma: no cover - --data is required
        raise typer.BadParameter("needs --data")
    try:
        settings, chosen = _version_folder(folder, version)
        written = asyncio.run(_profile(settings, chosen, folder / chosen, reference))
    except InferlineError as exc:
        typer.echo(f"inferline: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    path = _write(folder / chosen, written)
    typer.echo(
        f"wrote {path}: {written['rows']} rows, {len(written['features'])} features, "
        f"{len(written['predictions'])} prediction columns"
    )


def _version_folder(folder: Path, version: str | None) -> tuple[Any, str]:
    """The model's settings and the version folder's name (the newest by default)."""
    from inferline.errors import BadRequest
    from inferline.repository import version_key
    from inferline.settings import MODEL_SETTINGS_FILE, load_model_settings

    if not (folder / MODEL_SETTINGS_FILE).is_file():
        raise BadRequest(f"{folder} is not a model folder: it has no {MODEL_SETTINGS_FILE}")
    settings = load_model_settings(folder)
    versions = sorted(
        (p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=version_key,
    )
    if not versions or (version is not None and version not in versions):
        available = ", ".join(versions) or "none"
        raise BadRequest(f"{folder} has no version folder {version!r}; versions: {available}")
    return settings, version or versions[-1]


async def _profile(settings: Any, version: str, version_dir: Path, reference: Any) -> Any:
    """Load the version, profile the reference and the model's predictions on it."""
    from concurrent.futures import ThreadPoolExecutor

    from inferline.lifecycle import profile_reference
    from inferline.lifecycle.loading import load_checked

    with ThreadPoolExecutor(2, thread_name_prefix="inferline-profile") as executor:
        model = await load_checked(settings, version, version_dir, executor)
        try:
            return await profile_reference(model, reference)
        finally:
            await model.release(executor)


def _write(version_dir: Path, written: dict[str, Any]) -> Path:
    import json
    import os

    from inferline.monitoring.monitor import PROFILE_FILE

    path = version_dir / PROFILE_FILE
    partial = path.with_name(f".{PROFILE_FILE}.tmp")
    partial.write_text(json.dumps(written), encoding="utf-8")
    os.replace(partial, path)  # a server reading it never sees half a file
    return path
