"""API keys: shown once, stored hashed, revocable, expiring; the ``inferline keys`` CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from inferline.cli.main import app
from inferline.errors import BadRequest, Conflict, Unauthenticated
from inferline.security import Guard
from inferline.security import guard as guard_module
from inferline.security.keys import KeyCache, KeyStore, parse_expiry
from inferline.security.policy import PREDICT
from inferline.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(f"sqlite:///{tmp_path / 'registry.db'}")


def test_key_is_stored_as_a_salted_hash_only(store: KeyStore, tmp_path: Path) -> None:
    key, secret = store.create("web", ["predict:fraud", "predict:churn"])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("registry.db*"))
    assert secret.encode() not in raw
    assert secret.split("_")[-1].encode() not in raw
    assert key.digest.encode() in raw  # what is kept: HMAC(salt, secret)
    other, other_secret = store.create("web2", ["read"])
    assert other.salt != key.salt and other_secret != secret


def test_verify(store: KeyStore) -> None:
    _, secret = store.create("web", ["predict:fraud"])
    cache = KeyCache(store)
    cache.refresh()
    principal = cache.verify(secret)
    assert principal.name == "key:web" and principal.grants == {"predict": frozenset({"fraud"})}
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(Unauthenticated, match="not valid"):
        cache.verify(tampered)
    with pytest.raises(Unauthenticated, match="malformed"):
        cache.verify("ilk_short")


def test_revoked_and_expired_keys_are_refused(store: KeyStore) -> None:
    _, revoked = store.create("old", ["admin"])
    soon = datetime.now(UTC) + timedelta(minutes=5)
    _, expiring = store.create("temp", ["admin"], expires_at=soon)
    store.revoke("old")
    cache = KeyCache(store)
    cache.refresh()
    with pytest.raises(Unauthenticated, match="'old' is revoked"):
        cache.verify(revoked)
    assert cache.verify(expiring).name == "key:temp"
    with pytest.raises(Unauthenticated, match="'temp' is expired"):
        cache.verify(expiring, now=soon + timedelta(seconds=1))
    with pytest.raises(Conflict):
        store.revoke("old")
    assert cache.count == 2  # revoked keys keep authentication on


def test_create_checks_its_input(store: KeyStore) -> None:
    with pytest.raises(BadRequest, match="unknown role"):
        store.create("x", ["superuser"])
    with pytest.raises(BadRequest, match="at least one role"):
        store.create("x", [])
    with pytest.raises(BadRequest, match="key name"):
        store.create("bad name!", ["read"])
    store.create("x", ["read"])
    with pytest.raises(Conflict, match="exists already"):
        store.create("x", ["read"])


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry(None) is None
    with pytest.raises(BadRequest):
        parse_expiry("soon")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_guard_sees_new_and_revoked_keys_without_a_restart(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    auth = settings.auth.model_copy(update={"refresh_seconds": 0.05})
    guard = Guard(settings.model_copy(update={"registry_url": SecretStr(url), "auth": auth}))
    await guard.start()
    store = KeyStore(url)
    try:
        assert not guard.enabled and guard.idle  # no key yet: authentication is off
        _, ops = store.create("ops", ["admin"])
        await _until(lambda: guard.enabled)  # the first key turns authentication on
        assert not guard.idle
        principal = await guard.check(PREDICT, "m", f"Bearer {ops}", "1.2.3.4", "rest", "x")
        assert principal.name == "key:ops"
        with pytest.raises(Unauthenticated):
            await guard.check(PREDICT, "m", None, "1.2.3.4", "rest", "x")
        # A key made after the last re-read is looked up again at once.
        monkeypatch.setattr(guard_module, "_MISS_REFRESH_SECONDS", 0.0)
        _, web = store.create("web", ["predict"])
        assert (
            await guard.check(PREDICT, "m", f"Bearer {web}", "h", "rest", "x")
        ).name == "key:web"
        store.revoke("ops")
        store.revoke("web")

        async def refused() -> bool:
            try:
                await guard.check(PREDICT, "m", f"Bearer {ops}", "h", "rest", "x")
            except Unauthenticated:
                return True
            return False

        for _ in range(500):
            if await refused():
                break
            await asyncio.sleep(0.02)
        with pytest.raises(Unauthenticated, match="revoked"):
            await guard.check(PREDICT, "m", f"Bearer {ops}", "1.2.3.4", "rest", "x")
        assert guard.enabled  # revoking every key does not open the server
    finally:
        store.close()
        await guard.stop()


def test_cli_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERLINE_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    made = runner.invoke(
        app, ["keys", "create", "--role", "predict", "--models", "fraud,churn", "--name", "web"]
    )
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("ilk_") and " " not in secret
    admin = runner.invoke(app, ["keys", "create", "--role", "admin", "--name", "ops"])
    assert admin.exit_code == 0
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    assert "predict:churn, predict:fraud" in listed.stdout and "ops" in listed.stdout
    assert secret not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", "web"]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list"]).stdout
    again = runner.invoke(app, ["keys", "revoke", "web"])
    assert again.exit_code == 1 and "revoked already" in again.output
    bad = runner.invoke(app, ["keys", "create", "--role", "read", "--models", "x", "--name", "y"])
    assert bad.exit_code != 0
    for empty in ("", " , "):  # a key meant for some models never becomes one for all
        unscoped = runner.invoke(
            app, ["keys", "create", "--role", "predict", "--models", empty, "--name", "z"]
        )
        assert unscoped.exit_code == 2 and "at least one model" in unscoped.output
    assert "z" not in runner.invoke(app, ["keys", "list"]).stdout
    store = KeyStore(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    cache = KeyCache(store)
    cache.refresh()
    with pytest.raises(Unauthenticated, match="revoked"):
        cache.verify(secret)
    store.close()


def test_a_checked_key_is_remembered_until_the_next_read(store: KeyStore) -> None:
    _, secret = store.create("web", ["read"])
    cache = KeyCache(store)
    cache.refresh()
    assert cache.verify(secret) is cache.verify(secret)  # the second is a lookup
    store.revoke("web")
    cache.refresh()
    with pytest.raises(Unauthenticated, match="revoked"):
        cache.verify(secret)


def test_models_cli_sends_the_token_to_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from inferline.cli._control import RemoteControl
    from inferline.cli.models import _control

    monkeypatch.setenv("INFERLINE_AUTH__TOKEN", "ilk_0123456789ab_" + "k" * 43)
    control = _control("http://127.0.0.1:1")
    assert isinstance(control, RemoteControl)
    assert control.client.headers["authorization"] == "Bearer ilk_0123456789ab_" + "k" * 43
    monkeypatch.delenv("INFERLINE_AUTH__TOKEN")
    anonymous = _control("http://127.0.0.1:1")
    assert isinstance(anonymous, RemoteControl)
    assert "authorization" not in anonymous.client.headers
