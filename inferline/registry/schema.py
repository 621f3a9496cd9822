"""The registry's tables (SQLAlchemy Core); Alembic migrations create and evolve them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    #: Highest version number ever given out: numbers are never reused, even after a delete.
    Column("last_version", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("runtime", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("artifact", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("signature", JSON, nullable=False),
    Column("settings", JSON, nullable=False),
    Column("profile", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", Integer, nullable=True),
    Column("previous", Integer, nullable=True),
    Column("kind", String(16), nullable=False),  # "move" or "rollback"
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=True),
    Column("detail", Text, nullable=False),
    Column("ok", Boolean, nullable=False),
)

#: One row whose ``generation`` grows on every change: what serving replicas poll.
state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", Integer, nullable=False),
)

#: API keys (``inferline keys``): only a salted hash of the secret is kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public part of the key, looked up
    Column("name", String(128), nullable=False, unique=True),
    Column("salt", String(64), nullable=False),
    Column("digest", String(128), nullable=False),  # HMAC-SHA256(salt, secret), hex
    Column("roles", JSON, nullable=False),  # ["predict:fraud", "read"]
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
