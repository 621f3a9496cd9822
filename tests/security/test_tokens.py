"""JWT checks beyond the matrix: key confusion with a JWKS only, claims, roles, rotation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inferline.errors import Unauthenticated
from inferline.security import tokens as tokens_module
from inferline.security.tokens import TokenVerifier
from inferline.settings import JwtSettings
from tests.security.conftest import AUDIENCE, ISSUER, claims, hmac_token, unsigned_token


def _jwks(path: Path, *keys: tuple[str, object]) -> None:
    entries = []
    for kid, key in keys:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if kid.startswith("rsa") else jwt.algorithms.ECAlgorithm
        )
        entries.append({**algorithm.to_jwk(key, as_dict=True), "kid": kid})  # type: ignore[attr-defined]
    path.write_text(json.dumps({"keys": entries}))


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def verifier(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> TokenVerifier:
    """JWKS only: no shared secret an HS256 token could be checked with."""
    path = tmp_path / "jwks.json"
    _jwks(path, ("rsa-1", rsa_key.public_key()))
    settings = JwtSettings(jwks_file=path, audience=AUDIENCE, issuer=ISSUER)
    verifier = TokenVerifier(settings)
    verifier.refresh()
    return verifier


def test_rs256_token(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(["predict:fraud", "read"]), rsa_key, "RS256", {"kid": "rsa-1"})
    principal = verifier.verify(token)
    assert principal.name == "jwt:alice"
    assert principal.grants == {"predict": frozenset({"fraud"}), "read": None}


def test_hs256_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    public = rsa_key.public_key()
    for encoding, fmt in (
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ):
        forged = hmac_token(claims(["admin"]), public.public_bytes(encoding, fmt), "rsa-1")
        with pytest.raises(Unauthenticated, match="HS256 tokens are not accepted"):
            verifier.verify(forged)


def test_alg_none_and_unknown_algorithms_are_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="'none' is not accepted"):
        verifier.verify(unsigned_token(claims(["admin"])))
    with pytest.raises(Unauthenticated, match="not a valid JWT"):
        verifier.verify("not.a.jwt")


def test_es256_token_needs_an_ec_key(
    tmp_path: Path, verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(["admin"]), ec_key, "ES256", {"kid": "rsa-1"})
    with pytest.raises(Unauthenticated, match="no key of the key set"):
        verifier.verify(token)


def test_exp_is_required(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    no_exp = {k: v for k, v in claims(["admin"]).items() if k != "exp"}
    with pytest.raises(Unauthenticated, match="'exp'"):
        verifier.verify(jwt.encode(no_exp, rsa_key, "RS256", {"kid": "rsa-1"}))
    no_aud = {k: v for k, v in claims(["admin"]).items() if k != "aud"}
    with pytest.raises(Unauthenticated, match="'aud'"):
        verifier.verify(jwt.encode(no_aud, rsa_key, "RS256", {"kid": "rsa-1"}))


def test_scope_string_and_claim_name(tmp_path: Path) -> None:
    secret = "k" * 40
    verifier = TokenVerifier(JwtSettings(secret=secret, roles_claim="scope"))
    now = int(time.time())
    token = jwt.encode(
        {"sub": "svc", "exp": now + 60, "scope": "openid predict:churn read"}, secret
    )
    principal = verifier.verify(token)
    assert principal.grants == {"predict": frozenset({"churn"}), "read": None}
    assert secret not in repr(verifier.settings)


def test_jwks_rotation_is_picked_up(tmp_path: Path, verifier: TokenVerifier) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(["read"]), new_key, "RS256", {"kid": "rsa-2"})
    with pytest.raises(Unauthenticated):
        verifier.verify(token)
    path = verifier.settings.jwks_file
    assert path is not None
    _jwks(path, ("rsa-2", new_key.public_key()))
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))
    verifier.refresh()
    assert verifier.verify(token).name == "jwt:alice"


def test_a_checked_token_is_remembered_until_it_expires(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = jwt.encode(claims(["read"]), rsa_key, "RS256", {"kid": "rsa-1"})
    checks = []
    full = verifier._verify
    monkeypatch.setattr(verifier, "_verify", lambda t: checks.append(t) or full(t))
    first = verifier.verify(token)
    assert verifier.verify(token) is first and len(checks) == 1  # the second: a lookup
    later = time.time() + 300 + verifier.settings.leeway_seconds + 1  # past exp + leeway
    monkeypatch.setattr(tokens_module.time, "time", lambda: later)
    verifier.verify(token)  # (PyJWT reads its own clock; the point is it was asked again)
    assert len(checks) == 2
