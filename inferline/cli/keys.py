"""``inferline keys``: create, list and revoke the API keys of the registry database.

``create`` prints the new key once, alone on the last line of standard output
(``KEY=$(inferline keys create … | tail -n 1)``); only its salted hash is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from inferline.security.keys import KeyStore

app = typer.Typer(help="API keys: who may call the server, with which roles.")
console = Console()

Name = Annotated[str, typer.Option(help="A name for the key (shown in logs and audit).")]
Role = Annotated[
    list[str],
    typer.Option(help="predict, read or admin (repeat for several roles)."),
]
Models = Annotated[
    str | None,
    typer.Option(help="Limit the predict role to these models (comma-separated)."),
]
Expires = Annotated[
    str | None,
    typer.Option(help="Expiry: a duration from now (30d, 12h) or an ISO date/time."),
]


def _store() -> KeyStore:
    from inferline.security.keys import KeyStore
    from inferline.settings import Settings

    return KeyStore(Settings().registry_database)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"inferline: {message}", err=True)
    return typer.Exit(1)


@app.command()
def create(role: Role, name: Name, models: Models = None, expires: Expires = None) -> None:
    """Make a key; it is printed once, alone on the last line."""
    from inferline.errors import InferlineError
    from inferline.registry.store import default_actor
    from inferline.security.keys import parse_expiry

    scoped = [m.strip() for m in (models or "").split(",") if m.strip()]
    if models is not None and not scoped:
        # An empty list must not quietly become a key for every model.
        raise typer.BadParameter("name at least one model, e.g. --models fraud,churn")
    roles: list[str] = []
    for value in role:
        if value == "predict" and scoped:
            roles += [f"predict:{m}" for m in scoped]
        else:
            roles.append(value)
    if scoped and "predict" not in role:
        raise typer.BadParameter("--models limits the predict role: add --role predict")
    store = _store()
    try:
        key, secret = store.create(
            name, roles, expires_at=parse_expiry(expires), actor=default_actor()
        )
    except InferlineError as exc:
        raise _fail(exc.message) from exc
    finally:
        store.close()
    expiry = key.expires_at.isoformat() if key.expires_at else "never"
    typer.echo(f"created key {key.name!r} (roles: {', '.join(key.roles)}; expires: {expiry})")
    typer.echo("store it now: it is not shown again")
    typer.echo(secret)


@app.command(name="list")
def list_keys() -> None:
    """Every key with its roles and state (never the secret)."""
    store = _store()
    try:
        keys = store.all() if store.exists() else []
    finally:
        store.close()
    now = datetime.now(UTC)
    table = Table("name", "roles", "state", "created", "expires")
    for key in keys:
        table.add_row(
            key.name,
            ", ".join(key.roles),
            key.state(now),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.expires_at.strftime("%Y-%m-%d %H:%M") if key.expires_at else "never",
        )
    console.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: servers refuse it within auth.refresh_seconds."""
    from inferline.errors import InferlineError

    store = _store()
    try:
        store.revoke(name)
    except InferlineError as exc:
        raise _fail(exc.message) from exc
    finally:
        store.close()
    typer.echo(f"revoked key {name!r}")
