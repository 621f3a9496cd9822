"""Registry fixtures: the same tests run on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferline.registry.store import Registry

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN.replace("postgresql://", "postgres://"), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    name = f"inferline_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    store = Registry(registry_url, tmp_path / "artifacts")
    yield store
    store.close()
