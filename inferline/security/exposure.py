"""Secure defaults at start-up: no unauthenticated server beyond loopback by accident."""

from __future__ import annotations

import ipaddress
import logging

from inferline.security.guard import Guard
from inferline.settings import Settings

__all__ = ["check_exposure", "is_loopback", "startup_message"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def startup_message(settings: Settings, guard: Guard) -> tuple[int, str]:
    """(log level, line) saying what protects the server, or why nothing does."""
    if guard.enabled:
        return logging.INFO, guard.describe()
    if is_loopback(settings.host):
        return logging.WARNING, (
            f"{guard.describe()}; listening on {settings.host} only, so only this machine "
            "can call it"
        )
    return logging.WARNING, (
        f"{guard.describe()}; listening on {settings.host} with --insecure: anyone who can "
        "reach this address may predict, read and change the registry"
    )


def check_exposure(settings: Settings, guard: Guard) -> None:
    """ValueError when the server would listen beyond loopback with no authentication
    (and ``insecure`` is not set). Reads the key table (blocking)."""
    try:
        guard.refresh()
    finally:
        guard.keys.store.close()
    if guard.enabled or settings.insecure or is_loopback(settings.host):
        return
    raise ValueError(
        f"refusing to serve on {settings.host} without authentication: anyone who can "
        "reach it could call every route. Create a key (inferline keys create --role admin "
        "--name ops), set INFERLINE_AUTH__JWT__SECRET or __JWKS_FILE, listen on 127.0.0.1, "
        "or pass --insecure to accept this"
    )
