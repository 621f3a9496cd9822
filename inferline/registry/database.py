"""Opening a registry database: engine, SQLite pragmas, Alembic migrations to head."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inferline.errors import Unavailable
from inferline.settings.security import redact_url

__all__ = ["connect", "engine_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def engine_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (ImportError, sa.exc.ArgumentError) as exc:
        hint = " (pip install 'inferline[postgres]')" if "postgres" in url else ""
        raise Unavailable(f"cannot open registry {redact_url(url)}: {exc}{hint}") from exc
    _migrate(engine, url)
    return engine


def _migrate(engine: Engine, url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Replicas starting together must not race to create tables.
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(7305417)"))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            return
        except sa.exc.OperationalError as exc:
            if attempt == 4:
                raise Unavailable(f"registry {redact_url(url)} is unreachable: {exc.orig}") from exc
            time.sleep(0.2 * (attempt + 1))
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            time.sleep(0.2)  # a concurrent first start created the tables; look again


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (serving replicas) never block writers
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
