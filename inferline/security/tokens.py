"""JWT bearer tokens from an identity provider (PyJWT).

HS256 tokens are checked with ``auth.jwt.secret``; RS256 and ES256 ones with
the public keys of ``auth.jwt.jwks_file``. The token's own header picks the
family, and the key comes from that family only: an HS256 token is never
checked against a public key (the RS/HS confusion attack), ``alg: none`` is
never accepted, and an RSA key never checks an ES256 token. ``exp`` is
required; ``nbf``, ``aud`` and ``iss`` are checked (the last two when set).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jwt

from inferline.errors import Unauthenticated
from inferline.security.principals import Principal, parse_grants
from inferline.settings import JwtSettings

__all__ = ["TokenVerifier"]

logger = logging.getLogger(__name__)

#: Tokens checked and still valid, kept so a request costs a dict lookup (bounded).
_VERIFIED_MAX = 10_000

#: Accepted algorithms and the JWK key type each needs.
_ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}


class TokenVerifier:
    """Checks tokens against the configured secret and key set."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._secret = settings.secret.get_secret_value().encode() if settings.secret else None
        self._keys: list[jwt.PyJWK] = []
        self._jwks_mtime: float | None = None
        #: token -> (principal, exp): a token seen valid is valid until its exp (+ leeway).
        self._verified: dict[str, tuple[Principal, float]] = {}

    def describe(self) -> str:
        parts = []
        if self._secret is not None:
            parts.append("HS256")
        if self.settings.jwks_file is not None:
            parts.append(f"RS256/ES256 from {self.settings.jwks_file} ({len(self._keys)} keys)")
        return "JWT " + " and ".join(parts)

    def refresh(self) -> None:
        """(Re)read the key set when its file changed. Blocking: call it in a thread."""
        path = self.settings.jwks_file
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
            if mtime == self._jwks_mtime:
                return
            self._keys = list(jwt.PyJWKSet.from_json(path.read_text()).keys)
            self._jwks_mtime = mtime
            self._verified = {}  # keys rotated: check every token again
        except (OSError, jwt.PyJWTError, ValueError) as exc:
            logger.error("cannot read the JWKS file %s: %s", path, exc)

    def _key(self, alg: str, kid: str | None) -> Any:
        if alg == "HS256":
            if self._secret is None:
                raise Unauthenticated("HS256 tokens are not accepted here")
            return self._secret
        kty = _ASYMMETRIC.get(alg)
        if kty is None:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        candidates = [k for k in self._keys if k.key_type == kty]
        if kid is not None:
            candidates = [k for k in candidates if k.key_id == kid]
        if len(candidates) != 1:
            raise Unauthenticated("no key of the key set matches the token's kid and algorithm")
        return candidates[0].key

    def verify(self, token: str) -> Principal:
        verified = self._verified.get(token)
        if verified is not None:
            principal, expires = verified
            if time.time() < expires + self.settings.leeway_seconds:
                return principal
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the bearer token is not a valid JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthenticated("the token names no algorithm")
        kid = header.get("kid")
        key = self._key(alg, kid if isinstance(kid, str) else None)
        required = ["exp"]
        if self.settings.audience is not None:
            required.append("aud")
        if self.settings.issuer is not None:
            required.append("iss")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": required, "verify_aud": self.settings.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token's signature or claims are not valid") from exc
        roles = claims.get(self.settings.roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            roles = []
        subject = claims.get("sub")
        name = f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt:<no subject>"
        principal = Principal(name[:200], "jwt", parse_grants(str(r) for r in roles))
        return principal, float(claims["exp"])
