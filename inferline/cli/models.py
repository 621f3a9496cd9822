"""``inferline models``: register, list, show, alias, promote, rollback, delete, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inferline.cli._control import Control, ControlError, LocalControl, RemoteControl
from inferline.settings._files import read_mapping

if TYPE_CHECKING:
    from inferline.registry.profile import ReferenceData

app = typer.Typer(help="Manage the model registry (local, or a server's with --server).")
console = Console()

Server = Annotated[
    str | None,
    typer.Option(
        help="Act through a running server's API (http://host:port).", envvar="INFERLINE_SERVER"
    ),
]
Alias = Annotated[str, typer.Option(help="The alias to move.")]


def _control(server: str | None) -> Control:
    from inferline.settings import Settings

    settings = Settings()
    if server:
        token = settings.auth.token
        return RemoteControl(server, token=token.get_secret_value() if token else None)
    return LocalControl(settings)


def _fail(exc: ControlError) -> typer.Exit:
    typer.echo(f"inferline: {exc}", err=True)
    return typer.Exit(1)


def _pairs(values: list[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} must look like key=value")
        tags[key] = rest
    return tags


def reference_option(
    path: Path | None, features: str | None, exclude: str | None
) -> ReferenceData | None:
    """``--reference``/``--data`` with ``--features``/``--exclude`` (comma-separated)."""
    if path is None:
        if features or exclude:
            raise typer.BadParameter("needs reference data to choose columns from")
        return None
    from inferline.registry.profile import ReferenceData

    return ReferenceData(path, _names(features) or None, _names(exclude))


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


def _read_mapping(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return read_mapping(path, f"{what} file")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def register(
    name: str,
    path: Annotated[Path, typer.Argument(help="Artifact file, or folder (e.g. an MLflow model).")],
    runtime: Annotated[str | None, typer.Option(help="Runtime; guessed from the file.")] = None,
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    metrics: Annotated[Path | None, typer.Option(help="JSON file of training metrics.")] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Training data (Parquet/CSV) to profile.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="The reference's feature columns, in the model's order: a,b,c."),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(help="Reference columns that are not features (an id, the label)."),
    ] = None,
    settings: Annotated[
        Path | None, typer.Option(help="model-settings.yaml (batching, ...).")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    server: Server = None,
) -> None:
    """Register a new version (checked to load and answer first)."""
    options = {
        "runtime": runtime,
        "description": description,
        "tags": _pairs(tag or []),
        "metrics": _read_mapping(metrics, "metrics"),
        "settings": _read_mapping(settings, "settings"),
        "reference": reference_option(reference, features, exclude),
        "alias": alias,
    }
    try:
        record = _control(server).register(name, path, **options)
    except ControlError as exc:
        raise _fail(exc) from exc
    aliases = f" ({', '.join(record['aliases'])})" if record["aliases"] else ""
    typer.echo(
        f"registered {name} version {record['version']}{aliases} sha256:{record['sha256'][:12]}"
    )


@app.command("list")
def list_models(server: Server = None) -> None:
    """Every model with its latest version and aliases."""
    try:
        rows = _control(server).models()
    except ControlError as exc:
        raise _fail(exc) from exc
    table = Table("model", "latest", "versions", "aliases")
    for row in rows:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(row["aliases"].items()))
        table.add_row(row["name"], str(row["latest"]), str(row["versions_count"]), aliases)
    console.print(table)


@app.command()
def show(
    name: str,
    version: Annotated[str | None, typer.Option(help="A version number or alias.")] = None,
    server: Server = None,
) -> None:
    """A model's versions, or one version's metadata as JSON."""
    try:
        control = _control(server)
        if version is not None:
            typer.echo(json.dumps(control.version(name, version), indent=2))
            return
        model = control.show(name)
    except ControlError as exc:
        raise _fail(exc) from exc
    table = Table("version", "runtime", "aliases", "size", "created", "sha256", "description")
    for v in model["versions"]:
        table.add_row(
            str(v["version"]),
            v["runtime"],
            ", ".join(v["aliases"]),
            str(v["size"]),
            v["created_at"][:19],
            v["sha256"][:12],
            v["description"],
        )
    console.print(table)


@app.command("alias")
def set_alias(
    name: str,
    alias: str,
    version: int,
    allow_signature_change: Annotated[bool, typer.Option()] = False,
    server: Server = None,
) -> None:
    """Point an alias at a version (after checking it loads and answers)."""
    _move(name, alias, version, allow_signature_change, server)


@app.command()
def promote(
    name: str,
    version: int,
    alias: Alias = "production",
    allow_signature_change: Annotated[bool, typer.Option()] = False,
    server: Server = None,
) -> None:
    """Move production (or --alias) to a version; the previous one stays in history."""
    _move(name, alias, version, allow_signature_change, server)


def _move(name: str, alias: str, version: int, allow_change: bool, server: str | None) -> None:
    try:
        result = _control(server).alias(name, alias, version, allow_change)
    except ControlError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{name}: {alias} {result['previous']} → {version}")


@app.command()
def rollback(name: str, alias: Alias = "production", server: Server = None) -> None:
    """Move production (or --alias) back to the version it pointed at before."""
    try:
        result = _control(server).rollback(name, alias)
    except ControlError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{name}: {alias} → {result['version']}")


@app.command()
def delete(name: str, version: int, server: Server = None) -> None:
    """Delete a version (refused while an alias points at it)."""
    try:
        _control(server).delete(name, version)
    except ControlError as exc:
        raise _fail(exc) from exc
    typer.echo(f"deleted {name} version {version}")


@app.command()
def audit(name: Annotated[str | None, typer.Argument()] = None, server: Server = None) -> None:
    """Who changed what, when, and what was refused."""
    try:
        entries = _control(server).audit(name)
    except ControlError as exc:
        raise _fail(exc) from exc
    table = Table("when", "who", "action", "model", "version", "ok", "detail")
    for e in entries:
        table.add_row(
            e["at"][:19],
            e["actor"],
            e["action"],
            e["model"],
            str(e["version"] or ""),
            "yes" if e["ok"] else "NO",
            e["detail"],
        )
    console.print(table)
