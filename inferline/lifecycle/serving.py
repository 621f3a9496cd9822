"""What lifecycle needs of the server it feeds, and its report of what it could not serve.

:class:`inferline.dataplane.DataPlane` is the one :class:`ServingPlane`.
Lifecycle sits below the data plane (the data plane loads its model folder
through :func:`inferline.lifecycle.serve_folder`), so it names this protocol
instead of importing the class.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import Executor
from typing import Protocol

from inferline.errors import ModelNotFound, ModelNotReady
from inferline.repository import version_key
from inferline.runtimes.base import Model

__all__ = ["ServingPlane", "Unserved"]


class Unserved:
    """Versions a server knows of but does not serve, and why.

    A version that failed to load (version ``""``: the whole model folder) is
    UNAVAILABLE with its reason until it loads or is no longer wanted; a
    registered version this server does not load is named with how to serve it.
    """

    def __init__(self) -> None:
        self._failed: dict[str, dict[str, str]] = {}
        self._unloaded: dict[str, dict[str, str]] = {}

    def mark_failed(self, name: str, version: str, reason: str) -> None:
        self._failed.setdefault(name, {})[version] = reason

    def forget_failed(self, name: str, keep: Collection[str] = ()) -> None:
        """Stop reporting a model's failed versions, but those in ``keep``."""
        failed = {v: r for v, r in self._failed.get(name, {}).items() if v in keep}
        if failed:
            self._failed[name] = failed
        else:
            self._failed.pop(name, None)

    def loaded(self, name: str, version: str) -> None:
        """A version now serves: it (and its model folder) is no longer a failure."""
        self.forget_failed(name, keep=set(self.failures(name)) - {"", version})

    def failures(self, name: str) -> dict[str, str]:
        return dict(self._failed.get(name, {}))

    def set_unloaded(self, name: str, versions: dict[str, str]) -> None:
        """Registered versions not loaded here, each with how to serve it."""
        if versions:
            self._unloaded[name] = dict(versions)
        else:
            self._unloaded.pop(name, None)

    def refuse(self, name: str, version: str) -> None:
        """Raise the precise error for a version that is known but not served."""
        if version in self._failed.get(name, {}):
            raise ModelNotReady(
                f"model {name!r} version {version} is unavailable: "
                f"failed to load: {self._failed[name][version]}"
            )
        if version in self._unloaded.get(name, {}):
            raise ModelNotFound(
                f"model {name!r} version {version} is registered but not loaded on this "
                f"server: {self._unloaded[name][version]}"
            )

    def refuse_model(self, name: str) -> None:
        """Raise 503 with the reasons for a model none of whose versions serves."""
        if name in self._failed:
            raise ModelNotReady(f"model {name!r} is unavailable: {_text(self._failed[name])}")

    def not_ready(self, served: Collection[str]) -> dict[str, str]:
        """Models with no version in ``served`` because their load failed: name → reason."""
        return {n: _text(f) for n, f in sorted(self._failed.items()) if n not in served}

    def names(self) -> set[str]:
        return set(self._failed) | set(self._unloaded)

    def entries(self, name: str) -> dict[str, str]:
        """A model's unserved versions: version → repository index reason."""
        entries = {v: "not loaded on this server" for v in self._unloaded.get(name, {})}
        entries.update({v: f"failed to load: {r}" for v, r in self._failed.get(name, {}).items()})
        return entries


def _text(failed: dict[str, str]) -> str:
    return "; ".join(
        f"version {version} failed to load: {reason}" if version else f"failed to load: {reason}"
        for version, reason in sorted(failed.items(), key=lambda item: version_key(item[0]))
    )


class ServingPlane(Protocol):
    """The data plane as lifecycle drives it."""

    @property
    def executor(self) -> Executor: ...

    @property
    def unserved(self) -> Unserved: ...

    def model_names(self) -> list[str]: ...

    def versions(self, name: str) -> list[str]: ...

    def aliases(self, name: str) -> dict[str, str]: ...

    def set_aliases(self, name: str, aliases: dict[str, str]) -> None: ...

    async def add(self, model: Model) -> None: ...

    async def remove(self, name: str, version: str, drain_seconds: float = 30.0) -> None: ...
