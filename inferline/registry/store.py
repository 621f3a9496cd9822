"""The registry: SQLite file by default, PostgreSQL by URL, one SQLAlchemy code path.

Version numbers come from one atomic ``UPDATE … RETURNING`` on the model's row,
so processes registering at once serialise there and a number is never given
out twice, not even after a delete (a unique constraint backs this up). Every
change bumps ``registry_state.generation``, which serving replicas poll to
converge.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from inferline.errors import Conflict, ModelNotFound, Unavailable
from inferline.registry import schema as t
from inferline.registry.artifacts import ArtifactStore
from inferline.registry.database import connect, engine_url
from inferline.registry.records import (
    DEFAULT_ALIAS,
    AliasEvent,
    AuditEntry,
    ModelVersion,
    check_alias,
    check_name,
    parse_version,
)
from inferline.settings.security import redact_url

__all__ = ["Registry", "ServingPlan", "default_actor"]


class ServingPlan(NamedTuple):
    """What a serving replica should load of one model."""

    #: Versions to keep loaded: the latest and every aliased one.
    wanted: set[int]
    aliases: dict[str, int]
    latest: int
    #: Every registered version (the others can be served by pointing an alias at them).
    registered: set[int]


def default_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """Models, versions, aliases, alias history and the audit log."""

    def __init__(self, url: str, artifact_root: Path) -> None:
        self.url = engine_url(url)
        self.artifacts = ArtifactStore(artifact_root)
        self._engine: Engine | None = None

    # -- connection and schema -------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = connect(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except sa.exc.OperationalError as exc:
            raise Unavailable(
                f"registry {redact_url(self.url)} is unavailable: {exc.orig}"
            ) from exc

    # -- reads ---------------------------------------------------------------------------
    def generation(self) -> int:
        with self._tx() as c:
            return int(c.execute(sa.select(t.state.c.generation)).scalar_one())

    def model_names(self) -> list[str]:
        with self._tx() as c:
            return list(c.execute(sa.select(t.models.c.name).order_by(t.models.c.name)).scalars())

    def versions(self, name: str) -> list[ModelVersion]:
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            aliases = self._aliases(c, model_id)
            rows = c.execute(
                sa.select(t.versions)
                .where(t.versions.c.model_id == model_id)
                .order_by(t.versions.c.number)
            ).mappings()
            return [ModelVersion.from_row(name, row, aliases) for row in rows]

    def aliases(self, name: str) -> dict[str, int]:
        with self._tx() as c:
            return self._aliases(c, self._model_id(c, check_name(name)))

    def get(self, name: str, version: int) -> ModelVersion:
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            row = (
                c.execute(
                    sa.select(t.versions).where(
                        t.versions.c.model_id == model_id, t.versions.c.number == version
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise ModelNotFound(f"model {name!r} has no version {version}")
            return ModelVersion.from_row(name, row, self._aliases(c, model_id))

    def resolve(self, name: str, ref: str | int | None = None) -> ModelVersion:
        """A version by number or alias; None means ``production``, else the latest."""
        if ref is not None and str(ref).isascii() and str(ref).isdigit():
            return self.get(name, parse_version(ref))
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            aliases = self._aliases(c, model_id)
        if ref is not None:
            number = aliases.get(check_alias(str(ref)))
            if number is None:
                known = ", ".join(sorted(aliases)) or "none"
                raise ModelNotFound(f"model {name!r} has no alias {ref!r}; aliases: {known}")
            return self.get(name, number)
        if DEFAULT_ALIAS in aliases:
            return self.get(name, aliases[DEFAULT_ALIAS])
        latest = self.versions(name)
        if not latest:
            raise ModelNotFound(f"model {name!r} has no versions")
        return latest[-1]

    def serving_plan(self) -> dict[str, ServingPlan]:
        """Per model: versions to keep loaded (aliased + latest), aliases, latest version,
        and every registered version."""
        plan: dict[str, ServingPlan] = {}
        with self._tx() as c:
            registered: dict[str, set[int]] = {}
            for name, number in c.execute(
                sa.select(t.models.c.name, t.versions.c.number).join(
                    t.versions, t.versions.c.model_id == t.models.c.id
                )
            ):
                registered.setdefault(name, set()).add(int(number))
            latest = {name: max(numbers) for name, numbers in registered.items()}
            alias_rows = c.execute(
                sa.select(t.models.c.name, t.aliases.c.alias, t.aliases.c.version).join(
                    t.aliases, t.aliases.c.model_id == t.models.c.id
                )
            )
            by_model: dict[str, dict[str, int]] = {}
            for name, alias, version in alias_rows:
                by_model.setdefault(name, {})[alias] = version
        for name, newest in latest.items():
            aliases = by_model.get(name, {})
            plan[name] = ServingPlan({newest, *aliases.values()}, aliases, newest, registered[name])
        return plan

    def history(self, name: str, alias: str = DEFAULT_ALIAS) -> list[AliasEvent]:
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            rows = c.execute(
                sa.select(t.alias_history)
                .where(t.alias_history.c.model_id == model_id, t.alias_history.c.alias == alias)
                .order_by(t.alias_history.c.id)
            ).mappings()
            return [
                AliasEvent(
                    name, r["alias"], r["version"], r["previous"], r["kind"], r["at"], r["actor"]
                )
                for r in rows
            ]

    def audit(self, name: str | None = None, limit: int = 100) -> list[AuditEntry]:
        query = sa.select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(t.audit_log.c.model == name)
        with self._tx() as c:
            return [
                AuditEntry(
                    r["at"], r["actor"], r["action"], r["model"], r["version"], r["detail"], r["ok"]
                )
                for r in c.execute(query).mappings()
            ]

    # -- writes --------------------------------------------------------------------------
    def register(
        self,
        name: str,
        source: Path,
        *,
        runtime: str,
        signature: dict[str, Any],
        settings: dict[str, Any] | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        profile: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Copy the artifact in and add it as the next version (no alias is moved)."""
        check_name(name)
        actor = actor or default_actor()
        sha, artifact, size = self.artifacts.put(source)
        for _ in range(20):
            try:
                with self._tx() as c:
                    model_id = self._ensure_model(c, name)
                    # One atomic increment: concurrent writers serialise on this row.
                    number = c.execute(
                        t.models.update()
                        .where(t.models.c.id == model_id)
                        .values(last_version=t.models.c.last_version + 1)
                        .returning(t.models.c.last_version)
                    ).scalar_one()
                    c.execute(
                        t.versions.insert().values(
                            model_id=model_id,
                            number=number,
                            runtime=runtime,
                            sha256=sha,
                            artifact=artifact,
                            size=size,
                            description=description,
                            tags=tags or {},
                            metrics=metrics or {},
                            signature=signature,
                            settings=settings or {},
                            profile=profile,
                            created_at=_now(),
                            created_by=actor,
                        )
                    )
                    self._audit(c, actor, "register", name, number, f"{artifact} sha256:{sha[:12]}")
                    self._bump(c)
                return self.get(name, number)
            except sa.exc.IntegrityError:
                time.sleep(0.01)  # another process took this number (or created the model)
        raise Unavailable(f"could not allocate a version number for {name!r}; try again")

    def set_alias(
        self, name: str, alias: str, version: int, actor: str | None = None, *, kind: str = "move"
    ) -> int | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before."""
        actor = actor or default_actor()
        check_alias(alias)
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            self._require_version(c, model_id, name, version)
            previous = self._aliases(c, model_id).get(alias)
            if previous == version:
                return previous
            c.execute(
                t.aliases.delete().where(
                    t.aliases.c.model_id == model_id, t.aliases.c.alias == alias
                )
            )
            c.execute(t.aliases.insert().values(model_id=model_id, alias=alias, version=version))
            c.execute(
                t.alias_history.insert().values(
                    model_id=model_id,
                    alias=alias,
                    version=version,
                    previous=previous,
                    kind=kind,
                    at=_now(),
                    actor=actor,
                )
            )
            self._audit(
                c, actor, f"alias:{kind}", name, version, f"{alias}: {previous} -> {version}"
            )
            self._bump(c)
            return previous

    def rollback_target(self, name: str, alias: str = DEFAULT_ALIAS) -> int:
        """The version ``alias`` pointed at before its latest move (rollbacks walk back)."""
        stack: list[int | None] = []
        for event in self.history(name, alias):
            if event.kind == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(event.previous)
        target = stack[-1] if stack else None
        if target is None:
            raise Conflict(
                f"model {name!r}: alias {alias!r} has no earlier version to roll back to"
            )
        return target

    def delete_version(self, name: str, version: int, actor: str | None = None) -> None:
        actor = actor or default_actor()
        with self._tx() as c:
            model_id = self._model_id(c, check_name(name))
            self._require_version(c, model_id, name, version)
            pointing = sorted(a for a, v in self._aliases(c, model_id).items() if v == version)
            if pointing:
                raise Conflict(
                    f"model {name!r} version {version} is pointed at by alias(es) "
                    f"{', '.join(pointing)}; move them first"
                )
            c.execute(
                t.versions.delete().where(
                    t.versions.c.model_id == model_id, t.versions.c.number == version
                )
            )
            self._audit(c, actor, "delete", name, version, "version deleted")
            self._bump(c)

    def record(
        self,
        action: str,
        name: str,
        version: int | None,
        detail: str,
        *,
        ok: bool,
        actor: str | None = None,
    ) -> None:
        """An audit entry for something decided outside the store (a refused promote, a load)."""
        with self._tx() as c:
            self._audit(c, actor or default_actor(), action, name, version, detail, ok=ok)

    # -- helpers ---------------------------------------------------------------------
    def _model_id(self, c: Connection, name: str) -> int:
        model_id = c.execute(sa.select(t.models.c.id).where(t.models.c.name == name)).scalar()
        if model_id is None:
            raise ModelNotFound(f"model {name!r} is not registered")
        return int(model_id)

    def _ensure_model(self, c: Connection, name: str) -> int:
        model_id = c.execute(sa.select(t.models.c.id).where(t.models.c.name == name)).scalar()
        if model_id is not None:
            return int(model_id)
        inserted = c.execute(t.models.insert().values(name=name, created_at=_now()))
        key = inserted.inserted_primary_key
        if key is None:  # pragma: no cover - every supported driver returns it
            raise Unavailable(f"registry did not return an id for model {name!r}")
        return int(key[0])

    def _aliases(self, c: Connection, model_id: int) -> dict[str, int]:
        rows = c.execute(
            sa.select(t.aliases.c.alias, t.aliases.c.version).where(
                t.aliases.c.model_id == model_id
            )
        )
        return {alias: version for alias, version in rows}

    def _require_version(self, c: Connection, model_id: int, name: str, version: int) -> None:
        found = c.execute(
            sa.select(t.versions.c.id).where(
                t.versions.c.model_id == model_id, t.versions.c.number == version
            )
        ).scalar()
        if found is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")

    def _audit(
        self,
        c: Connection,
        actor: str,
        action: str,
        name: str,
        version: int | None,
        detail: str,
        *,
        ok: bool = True,
    ) -> None:
        c.execute(
            t.audit_log.insert().values(
                at=_now(),
                actor=actor,
                action=action,
                model=name,
                version=version,
                detail=detail,
                ok=ok,
            )
        )

    def _bump(self, c: Connection) -> None:
        c.execute(t.state.update().values(generation=t.state.c.generation + 1))
