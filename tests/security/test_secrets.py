"""Settings, logs and errors never print keys, tokens or passwords in URLs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inferline.security.ratelimit import RateLimiter
from inferline.settings import Settings
from inferline.settings.security import REVEAL, redact_url

JWT_SECRET = "jwt-secret-" + "x" * 30
PASSWORD = "hunter2-pw"


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("INFERLINE_AUTH__JWT__SECRET", JWT_SECRET)
    monkeypatch.setenv("INFERLINE_AUTH__RATE_LIMIT__REQUESTS_PER_SECOND", "5")
    monkeypatch.setenv(
        "INFERLINE_AUTH__RATE_LIMIT__REDIS_URL", f"redis://user:{PASSWORD}@127.0.0.1:1/0"
    )
    monkeypatch.setenv("INFERLINE_AUTH__TOKEN", "ilk_0123456789ab_" + "t" * 43)
    return Settings.load()


def test_settings_never_show_secrets(secret_settings: Settings) -> None:
    shown = repr(secret_settings) + secret_settings.model_dump_json() + str(secret_settings)
    for secret in (JWT_SECRET, PASSWORD, "t" * 43):
        assert secret not in shown


def test_workers_get_the_secrets(secret_settings: Settings) -> None:
    """``--workers N`` hands each worker the settings as JSON: it must carry the secrets."""
    copy = Settings.model_validate_json(secret_settings.model_dump_json(context=REVEAL))
    assert copy.auth.jwt.secret is not None
    assert copy.auth.jwt.secret.get_secret_value() == JWT_SECRET
    url = copy.auth.rate_limit.redis_url
    assert url is not None and PASSWORD in url.get_secret_value()


def test_redact_url() -> None:
    assert redact_url(f"redis://user:{PASSWORD}@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("postgresql://u@h/db?password=x") == "postgresql://u@h/db?***"
    assert redact_url("redis://host:6379") == "redis://host:6379"


async def test_rate_limit_store_errors_name_no_password(
    secret_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(secret_settings.auth.rate_limit)
    assert PASSWORD not in limiter.describe()
    with caplog.at_level(logging.WARNING):
        assert await limiter.take("k") == 0.0  # Redis unreachable: limited in process
    await limiter.close()
    assert "unavailable" in caplog.text and PASSWORD not in caplog.text


def test_redact_webhook_path() -> None:
    hook = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert redact_url(hook, keep_path=False) == "https://hooks.slack.com/***"


@pytest.mark.postgres
def test_registry_errors_name_no_password(tmp_path: Path) -> None:
    from inferline.errors import Unavailable
    from inferline.registry.store import Registry

    registry = Registry(f"postgresql://inferline:{PASSWORD}@127.0.0.1:1/none", tmp_path)
    with pytest.raises(Unavailable) as caught:
        registry.model_names()
    assert "unreachable" in caught.value.message
    assert PASSWORD not in caught.value.message and "***" in caught.value.message


def test_url_settings_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGISTRY_URL", "CACHE_URL", "PAYLOAD_LOG_URL"):
        monkeypatch.setenv(f"INFERLINE_{name}", f"postgresql://u:{PASSWORD}@db/x")
    settings = Settings.load()
    assert PASSWORD not in repr(settings) + settings.model_dump_json()
    assert PASSWORD in settings.registry_database  # what the registry connects with
    copy = Settings.model_validate_json(settings.model_dump_json(context=REVEAL))
    assert copy.cache_url is not None and PASSWORD in copy.cache_url.get_secret_value()
