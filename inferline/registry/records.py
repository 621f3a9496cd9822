"""Typed records the registry hands out, and the rules for names and versions.

Names and versions end up in file paths and URLs, so they are validated here,
once, before anything touches the database or the artifact folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inferline.errors import BadRequest

__all__ = [
    "DEFAULT_ALIAS",
    "AliasEvent",
    "AuditEntry",
    "ModelVersion",
    "check_alias",
    "check_name",
    "parse_version",
]

#: The alias a request without a version is served from (then the latest version).
DEFAULT_ALIAS = "production"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_name(name: str) -> str:
    """A model name: letters, digits, ``_ . -``; never a path."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise BadRequest(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit, and no '..'"
        )
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise BadRequest(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_', '-', starting with a letter"
        )
    return alias


def parse_version(version: str | int) -> int:
    """A version number (positive integer), from a path segment or a flag."""
    text = str(version)
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 9:
        raise BadRequest(f"invalid version {version!r}: expected a positive integer")
    return int(text)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version: where its artifact is and what it accepts."""

    name: str
    version: int
    runtime: str
    sha256: str
    artifact: str
    size: int
    created_at: datetime
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    signature: dict[str, Any] = field(default_factory=dict)
    #: The model-settings the version was registered with (batching, timeouts, ...).
    settings: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, name: str, row: Any, aliases: dict[str, int]) -> ModelVersion:
        """A ``versions`` table row, with the aliases that point at it."""
        return cls(
            name=name,
            version=row["number"],
            runtime=row["runtime"],
            sha256=row["sha256"],
            artifact=row["artifact"],
            size=row["size"],
            created_at=row["created_at"],
            description=row["description"],
            tags=dict(row["tags"]),
            metrics=dict(row["metrics"]),
            signature=dict(row["signature"]),
            settings=dict(row["settings"]),
            profile=row["profile"],
            aliases=tuple(sorted(a for a, v in aliases.items() if v == row["number"])),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "sha256": self.sha256,
            "artifact": self.artifact,
            "size": self.size,
            "created_at": self.created_at.isoformat(),
            "description": self.description,
            "tags": self.tags,
            "metrics": self.metrics,
            "signature": self.signature,
            "settings": self.settings,
            "aliases": list(self.aliases),
            "has_profile": self.profile is not None,
        }


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias; the history rollback walks back through."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    kind: str  # "move" or "rollback"
    at: datetime
    actor: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    model: str
    version: int | None
    detail: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "model": self.model,
            "version": self.version,
            "detail": self.detail,
            "ok": self.ok,
        }
