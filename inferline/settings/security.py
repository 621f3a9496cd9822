"""Security settings: who may call the server, and how often (``INFERLINE_AUTH__*``).

Secrets (the JWT shared secret, URLs that may carry a password) are ``SecretStr``:
their ``repr``, logs and the settings dump show ``**********``. Only the copy
handed to worker processes reveals them (``model_dump_json(context=REVEAL)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    WrapSerializer,
)

__all__ = ["REVEAL", "AuthSettings", "JwtSettings", "RateLimitSettings", "Secret", "redact_url"]

#: Serialization context that writes secrets in clear (only for spawning workers).
REVEAL = {"reveal_secrets": True}


def _serialize_secret(value: SecretStr, handler: Any, info: SerializationInfo) -> Any:
    context = info.context or {}
    if isinstance(context, dict) and context.get("reveal_secrets"):
        return value.get_secret_value()
    return handler(value)


def redact_url(url: str, keep_path: bool = True) -> str:
    """``url`` with its password (and any query, which may carry tokens) masked, for logs;
    ``keep_path=False`` masks the path too (webhook URLs carry their secret there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    masked_path = not keep_path and parts.path not in ("", "/")
    if parts.password is None and not parts.query and not masked_path:
        return url  # nothing to mask: as given (urlunsplit would drop sqlite's empty host)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = "***" if parts.query else ""
    path = "/***" if masked_path else parts.path
    return urlunsplit((parts.scheme, netloc, path, query, ""))


#: A secret string that stays masked everywhere but in the workers' copy of the settings.
Secret = Annotated[SecretStr, WrapSerializer(_serialize_secret)]


class JwtSettings(BaseModel):
    """Bearer tokens from an identity provider; any field set turns authentication on."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    secret: Secret | None = None
    """Shared secret of HS256 tokens (at least 32 bytes)."""
    jwks_file: Path | None = None
    """JSON Web Key Set of the issuer's public keys, for RS256 and ES256 tokens (re-read
    when the file changes)."""
    audience: str | None = None
    """Required ``aud`` claim; tokens for another audience are refused."""
    issuer: str | None = None
    """Required ``iss`` claim."""
    roles_claim: str = "roles"
    """Claim holding the roles: a list (``["predict:fraud", "read"]``) or an OAuth
    ``scope`` string (``"predict:fraud read"``)."""
    leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed on ``exp`` and ``nbf``."""

    @property
    def configured(self) -> bool:
        return self.secret is not None or self.jwks_file is not None


class RateLimitSettings(BaseModel):
    """Token buckets per principal (API key name, token subject) or, without auth, per
    client address; health routes are never limited."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    requests_per_second: float | None = Field(default=None, gt=0)
    """Sustained requests per second each principal may make; None turns limits off."""
    burst: int = Field(default=100, ge=1)
    """Requests a principal may make at once, after being idle (the bucket's size)."""
    redis_url: Secret | None = None
    """``redis://…`` to share the buckets between workers and replicas; default: in
    each process."""
    max_clients: int = Field(default=100_000, ge=1)
    """Buckets kept in process; the least recently used is dropped past this."""


class AuthSettings(BaseModel):
    """Authentication, roles and rate limits (see docs/security.md)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    jwt: JwtSettings = Field(default_factory=JwtSettings)
    """Bearer tokens (JWT) from an identity provider."""
    public_metrics: bool = False
    """Serve ``/metrics`` without credentials when authentication is on (else it needs
    the ``read`` role)."""
    refresh_seconds: float = Field(default=1.0, gt=0)
    """How often API keys are re-read from the registry database: a new or revoked key
    takes effect within this."""
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    """Request rate limits."""
    token: Secret | None = None
    """Credentials (an API key or a JWT) that ``inferline models --server`` sends as
    ``Authorization: Bearer``; set it as ``INFERLINE_AUTH__TOKEN``."""
