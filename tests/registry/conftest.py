"""Registry fixtures: the same tests run on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inferline.registry.store import Registry


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    store = Registry(registry_url, tmp_path / "artifacts")
    yield store
    store.close()
