"""An authenticated server world: keys in a registry database, JWT keys made here.

``auth`` gives settings with an HS256 secret and a JWKS file (one RSA and one EC
key, made with ``cryptography``), API keys of every kind (admin, read, predict
limited to ``kitchen``, revoked, expired), and ``creds``: the ``Authorization``
value of each case of the matrix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from inferline.dataplane import DataPlane
from inferline.security import Guard
from inferline.security.keys import KeyStore
from inferline.settings import Settings

SECRET = "s" * 40
AUDIENCE = "inferline"
ISSUER = "https://idp.example"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any]) -> str:
    """``alg: none``: a token with no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def hmac_token(claims: dict[str, Any], key: bytes, kid: str | None = None) -> str:
    """HS256 signed by hand (PyJWT refuses a PEM public key as an HMAC secret)."""
    head: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        head["kid"] = kid
    signing = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


@dataclass
class AuthWorld:
    settings: Settings
    creds: dict[str, str]
    rsa_public_pem: bytes
    store: KeyStore


def claims(roles: Any, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300}
    return {**base, "roles": roles, **extra}


@pytest.fixture
def auth(tmp_path: Path, settings: Settings) -> AuthWorld:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**rsa_jwk, "kid": "rsa-1"}, {**ec_jwk, "kid": "ec-1"}]}))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    configured = settings.model_copy(
        update={
            "registry_url": SecretStr(url),
            "auth": settings.auth.model_validate(
                {
                    "jwt": {
                        "secret": SECRET,
                        "jwks_file": jwks,
                        "audience": AUDIENCE,
                        "issuer": ISSUER,
                    }
                }
            ),
        }
    )
    store = KeyStore(url)
    past = datetime.now(UTC) - timedelta(hours=1)
    creds: dict[str, str] = {}
    for name, roles, expires in (
        ("admin", ["admin"], None),
        ("reader", ["read"], None),
        ("kitchen", ["predict:kitchen"], None),
        ("revoked", ["admin"], None),
        ("expired", ["admin"], past),
    ):
        _, secret = store.create(name, roles, expires_at=expires)
        creds[f"key-{name}"] = f"Bearer {secret}"
    store.revoke("revoked")
    store.close()
    rsa_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    creds.update(
        {
            "key-wrong": "Bearer ilk_0123456789ab_" + "A" * 43,
            "jwt-hs-kitchen": "Bearer " + jwt.encode(claims(["predict:kitchen"]), SECRET),
            "jwt-rs-kitchen": "Bearer "
            + jwt.encode(claims("predict:kitchen"), rsa_key, "RS256", {"kid": "rsa-1"}),
            "jwt-es-admin": "Bearer "
            + jwt.encode(claims(["admin"]), ec_key, "ES256", {"kid": "ec-1"}),
            "jwt-expired": "Bearer "
            + jwt.encode(claims(["admin"], exp=now - 3600), rsa_key, "RS256", {"kid": "rsa-1"}),
            "jwt-not-yet": "Bearer "
            + jwt.encode(claims(["admin"], nbf=now + 3600), rsa_key, "RS256", {"kid": "rsa-1"}),
            "jwt-wrong-aud": "Bearer "
            + jwt.encode(claims(["admin"], aud="other"), rsa_key, "RS256", {"kid": "rsa-1"}),
            "jwt-wrong-iss": "Bearer "
            + jwt.encode(claims(["admin"], iss="https://evil"), rsa_key, "RS256", {"kid": "rsa-1"}),
            "jwt-other-key": "Bearer "
            + jwt.encode(claims(["admin"]), other_rsa, "RS256", {"kid": "rsa-1"}),
            "jwt-alg-none": "Bearer " + unsigned_token(claims(["admin"])),
            "jwt-hs-rs-confusion": "Bearer " + hmac_token(claims(["admin"]), rsa_pem, "rsa-1"),
            "basic": "Basic " + base64.b64encode(b"admin:admin").decode(),
        }
    )
    return AuthWorld(configured, creds, rsa_pem, KeyStore(url))


@pytest.fixture
async def auth_plane(auth: AuthWorld) -> AsyncIterator[DataPlane]:
    plane = DataPlane(auth.settings)
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def guard(auth: AuthWorld) -> AsyncIterator[Guard]:
    guard = Guard(auth.settings)
    await guard.start()
    yield guard
    await guard.stop()
