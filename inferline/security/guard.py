"""The one check every request passes: credentials, role, rate limit, audit.

Each transport finds the request's :class:`~inferline.security.policy.Rule`
in the policy table and calls :meth:`Guard.check` with the ``Authorization``
value, the model the request is about and the client's address; it answers
the error raised (401 / UNAUTHENTICATED, 403 / PERMISSION_DENIED, 429 /
RESOURCE_EXHAUSTED) its usual way. Authentication is on while an API key exists
(revoked ones count: revoking the last key does not open the server) or a JWT
setting is set. Refusals and management calls go to the ``inferline.audit``
log with the principal's name, never its secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from inferline.errors import PermissionDenied, RateLimited, Unauthenticated
from inferline.security.keys import KEY_PREFIX, KeyCache, KeyStore
from inferline.security.policy import METRICS, Rule
from inferline.security.principals import ANONYMOUS, Principal
from inferline.security.ratelimit import RateLimiter
from inferline.security.tokens import TokenVerifier
from inferline.settings import Settings

__all__ = ["Guard", "GuardMetrics"]

logger = logging.getLogger(__name__)
audit = logging.getLogger("inferline.audit")

#: An unknown key id re-reads the keys at most this often (a key made a moment ago).
_MISS_REFRESH_SECONDS = 1.0
_BEARER = "bearer "
_NO_CREDENTIALS = "this server needs credentials: send 'Authorization: Bearer <API key or token>'"


class GuardMetrics(Protocol):
    """The two counters :class:`~inferline.monitoring.metrics.Metrics` keeps for the guard."""

    def auth_refused(self, protocol: str, reason: str) -> None: ...
    def rate_limited(self, protocol: str) -> None: ...


class Guard:
    """Authentication, authorization and rate limits for one server process."""

    def __init__(self, settings: Settings, metrics: GuardMetrics | None = None) -> None:
        self.settings = settings.auth
        self.keys = KeyCache(KeyStore(settings.registry_database))
        jwt = settings.auth.jwt
        self.tokens = TokenVerifier(jwt) if jwt.configured else None
        limits = settings.auth.rate_limit
        self.limiter = RateLimiter(limits) if limits.requests_per_second is not None else None
        self.metrics = metrics
        #: Nothing to check (no auth, no limits): transports may skip the policy lookup.
        self.idle = self.tokens is None and self.limiter is None
        self._task: asyncio.Task[None] | None = None
        self._last_refresh = 0.0

    @property
    def enabled(self) -> bool:
        """Whether requests need credentials (a key exists, or JWT is configured)."""
        return self.tokens is not None or self.keys.count > 0

    def describe(self) -> str:
        """One line for the start-up log: what protects this server, or why nothing does."""
        if not self.enabled:
            return (
                "authentication is OFF: no API key exists in the registry database and no "
                "auth.jwt setting is set (create one with: inferline keys create)"
            )
        parts = []
        if self.keys.count:
            parts.append(f"{self.keys.count} API key(s)")
        if self.tokens is not None:
            parts.append(self.tokens.describe())
        limits = f"; rate limit {self.limiter.describe()}" if self.limiter else ""
        return f"authentication is on: {', '.join(parts)}{limits}"

    # -- lifecycle -------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read keys and the JWKS file (blocking: run it in a thread)."""
        self.keys.refresh()
        if self.tokens is not None:
            self.tokens.refresh()
        self._last_refresh = time.monotonic()
        self.idle = not self.enabled and self.limiter is None

    async def start(self) -> None:
        await asyncio.to_thread(self.refresh)
        self._task = asyncio.get_running_loop().create_task(self._refresher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.limiter is not None:
            await self.limiter.close()
        await asyncio.to_thread(self.keys.store.close)

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # noqa: BLE001 - keep the last good keys; retry later
                logger.warning("cannot re-read API keys: %s", type(exc).__name__)

    # -- the check -------------------------------------------------------------------
    def requires_credentials(self, rule: Rule) -> bool:
        return (
            self.enabled
            and not rule.public
            and not (rule is METRICS and self.settings.public_metrics)
        )

    def refuse_early(
        self, rule: Rule, authorization: str | None, client: str, protocol: str, what: str
    ) -> Unauthenticated | None:
        """The refusal of a call that needs credentials and carries none, which a
        transport may give from the request head, before reading any body."""
        if authorization or not self.requires_credentials(rule):
            return None
        error = Unauthenticated(_NO_CREDENTIALS)
        self._refused(protocol, "unauthenticated", None, client, what, error.message)
        return error

    async def check(
        self,
        rule: Rule,
        model: str | None,
        authorization: str | None,
        client: str,
        protocol: str,
        what: str,
    ) -> Principal:
        """The caller's principal, or Unauthenticated / PermissionDenied / RateLimited."""
        if rule.public or (rule is METRICS and self.settings.public_metrics):
            return ANONYMOUS
        principal = ANONYMOUS
        if self.requires_credentials(rule):
            try:
                principal = await self._authenticate(authorization)
            except Unauthenticated as exc:
                self._refused(protocol, "unauthenticated", None, client, what, exc.message)
                raise
            if not principal.allows(rule.roles, model, rule.model_bound):
                about = f" on model {model!r}" if rule.model_bound and model else ""
                error = PermissionDenied(
                    f"{principal.name} may not {what}{about}: it needs the "
                    f"{' or '.join(rule.roles)} role"
                )
                self._refused(protocol, "forbidden", principal, client, what, error.message)
                raise error
        if self.limiter is not None:
            bucket = principal.name if principal is not ANONYMOUS else f"addr:{client}"
            wait = await self.limiter.take(bucket)
            if wait > 0:
                if self.metrics is not None:
                    self.metrics.rate_limited(protocol)
                audit.warning("refused (rate limit) %s from %s as %s", what, client, principal.name)
                raise RateLimited(f"rate limit reached; retry in {wait:.2f} s", wait)
        if rule.roles == ("admin",):
            audit.info("allowed %s from %s as %s", what, client, principal.name)
        return principal

    async def _authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(_NO_CREDENTIALS)
        if authorization[:7].lower() != _BEARER:
            raise Unauthenticated("the Authorization header must read 'Bearer <credentials>'")
        token = authorization[7:].strip()
        if token.startswith(KEY_PREFIX):
            if not self.keys.known(token) and self._may_refresh():
                self._last_refresh = time.monotonic()  # one re-read at a time
                await asyncio.to_thread(self.refresh)  # a key made since the last re-read
            return self.keys.verify(token)
        if self.tokens is not None:
            return self.tokens.verify(token)
        raise Unauthenticated("the bearer credentials are not an API key of this server")

    def _may_refresh(self) -> bool:
        return time.monotonic() - self._last_refresh >= _MISS_REFRESH_SECONDS

    def _refused(
        self,
        protocol: str,
        reason: str,
        principal: Principal | None,
        client: str,
        what: str,
        message: str,
    ) -> None:
        if self.metrics is not None:
            self.metrics.auth_refused(protocol, reason)
        who = principal.name if principal is not None else "unauthenticated"
        audit.warning("refused (%s) %s from %s as %s: %s", reason, what, client, who, message)
