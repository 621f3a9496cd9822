"""Reading a YAML file that must hold a mapping: model settings, server settings, CLI options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_mapping"]


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The file's mapping (empty for an empty file), or ``ValueError`` saying what is wrong."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {path}: expected a mapping at the top level")
    return loaded
