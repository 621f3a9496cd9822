"""API keys: made at random, shown once, kept as a salted hash in the registry database.

A key reads ``ilk_<id>_<secret>``: ``id`` (12 hex digits) finds its row, and
``HMAC-SHA256(salt, secret)`` must equal the stored digest, compared in
constant time. The secret has 256 bits of entropy, so a fast keyed hash is as
strong as a slow one and costs a microsecond per request. Servers keep the rows
in memory (:class:`KeyCache`) and re-read them every ``auth.refresh_seconds``:
a revoked key stops working within that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inferline.errors import BadRequest, Conflict, NotFound, Unauthenticated
from inferline.registry import schema as t
from inferline.registry.database import connect, engine_url
from inferline.security.principals import Principal, parse_grants

__all__ = ["KEY_PREFIX", "ApiKey", "KeyCache", "KeyStore", "parse_expiry"]

KEY_PREFIX = "ilk_"
_KEY = re.compile(r"^ilk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VERIFIED_MAX = 10_000


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def parse_expiry(value: str | None, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``3600s`` from now, or an ISO 8601 date/time (UTC if naive)."""
    if not value:
        return None
    now = now or datetime.now(UTC)
    found = _DURATION.match(value)
    if found:
        return now + timedelta(seconds=int(found[1]) * _UNITS[found[2]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"expiry {value!r} is neither a duration (30d) nor a date") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: everything but the secret, which is never stored."""

    id: str
    name: str
    salt: str
    digest: str
    roles: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "roles": list(self.roles),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "state": self.state(now or datetime.now(UTC)),
        }


def _row(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        salt=row.salt,
        digest=row.digest,
        roles=tuple(row.roles),
        created_at=_utc(row.created_at) or datetime.now(UTC),
        created_by=row.created_by,
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
    )


class KeyStore:
    """The ``api_keys`` table of a registry database (created by its migrations)."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        self._engine: Engine | None = None

    def exists(self) -> bool:
        """False for a SQLite file not made yet: then there is no key (nothing is created)."""
        if self._engine is not None or not self.url.startswith("sqlite"):
            return True
        path = self.url.split("///", 1)[-1]
        return path == ":memory:" or Path(path).is_file()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = connect(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def create(
        self,
        name: str,
        roles: list[str],
        *,
        expires_at: datetime | None = None,
        actor: str = "",
    ) -> tuple[ApiKey, str]:
        """A new key and its one-time clear text (``ilk_…``); only its hash is stored."""
        if not _NAME.match(name):
            raise BadRequest(f"key name {name!r} must be 1-128 letters, digits, '.', '_', '-'")
        grants = parse_grants(roles, strict=True)
        if not grants:
            raise BadRequest("a key needs at least one role (predict, read or admin)")
        key_id, secret, salt = (
            secrets.token_hex(6),
            secrets.token_urlsafe(32),
            secrets.token_hex(16),
        )
        key = ApiKey(
            id=key_id,
            name=name,
            salt=salt,
            digest=_digest(salt, secret),
            roles=tuple(sorted(set(roles))),
            created_at=datetime.now(UTC),
            created_by=actor,
            expires_at=expires_at,
            revoked_at=None,
        )
        row = {field: getattr(key, field) for field in ApiKey.__slots__}
        row["roles"] = list(key.roles)
        try:
            with self.engine.begin() as c:
                c.execute(t.api_keys.insert().values(**row))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"a key named {name!r} exists already") from exc
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def all(self) -> list[ApiKey]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.api_keys).order_by(t.api_keys.c.created_at)).all()
        return [_row(r) for r in rows]

    def revoke(self, name: str) -> ApiKey:
        with self.engine.begin() as c:
            done = c.execute(
                t.api_keys.update()
                .where(t.api_keys.c.name == name, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = c.execute(sa.select(t.api_keys).where(t.api_keys.c.name == name)).first()
        if row is None:
            raise NotFound(f"no key named {name!r}")
        if not done.rowcount:
            raise Conflict(f"key {name!r} was revoked already")
        return _row(row)


class KeyCache:
    """The keys a server checks requests against, re-read with :meth:`refresh`."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._keys: dict[str, ApiKey] = {}
        #: Keys checked since the last re-read: key -> (principal, expiry), so a request
        #: costs a dict lookup; only valid keys enter, and a re-read empties it.
        self._verified: dict[str, tuple[Principal, datetime | None]] = {}
        #: Keys ever made, revoked ones included: one is enough to turn authentication on.
        self.count = 0

    def refresh(self) -> None:
        """Blocking (database): call it in a thread."""
        if not self.store.exists():
            return
        keys = self.store.all()
        self._keys = {k.id: k for k in keys}
        self._verified = {}
        self.count = len(keys)

    def known(self, token: str) -> bool:
        if token in self._verified:
            return True
        found = _KEY.match(token)
        return found is not None and found[1] in self._keys

    def verify(self, token: str, now: datetime | None = None) -> Principal:
        """The key's principal; Unauthenticated for an unknown, wrong, expired or revoked key."""
        verified = self._verified.get(token)
        if verified is not None:
            principal, expires_at = verified
            if expires_at is None or expires_at > (now or datetime.now(UTC)):
                return principal
        found = _KEY.match(token)
        if found is None:
            raise Unauthenticated("the API key is malformed")
        key = self._keys.get(found[1])
        # Hash even for an unknown id, so timing does not tell known ids apart.
        digest = _digest(key.salt if key else "00" * 16, found[2])
        if key is None or not hmac.compare_digest(digest, key.digest):
            raise Unauthenticated("the API key is not valid")
        state = key.state(now or datetime.now(UTC))
        if state != "active":
            raise Unauthenticated(f"the API key {key.name!r} is {state}")
        principal = Principal(f"key:{key.name}", "key", parse_grants(key.roles))
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (principal, key.expires_at)
        return principal
