"""``inferline monitor``: quality and drift as a running server sees them.

The windows live in the server process, so these commands read its API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Model quality and data drift, read from a running server.")
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
