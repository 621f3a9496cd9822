"""What ``inferline models`` acts on: the local registry, or a server's management API.

Both speak the same JSON shapes (``ModelVersion.to_json`` and friends), so the
commands print the same tables either way.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from inferline.errors import InferlineError
from inferline.settings import Settings

__all__ = ["Control", "ControlError", "LocalControl", "RemoteControl"]


class ControlError(Exception):
    """A refused or failed command: its message is for the user."""


class Control(Protocol):
    def models(self) -> list[dict[str, Any]]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def version(self, name: str, ref: str) -> dict[str, Any]: ...
    def register(self, name: str, source: Path, **options: Any) -> dict[str, Any]: ...
    def alias(self, name: str, alias: str, version: int, allow_change: bool) -> dict[str, Any]: ...
    def rollback(self, name: str, alias: str) -> dict[str, Any]: ...
    def delete(self, name: str, version: int) -> dict[str, Any]: ...
    def audit(self, name: str | None) -> list[dict[str, Any]]: ...


class LocalControl:
    """Acts on the registry directly, checking versions load and warm up in this process."""

    def __init__(self, settings: Settings) -> None:
        from inferline.registry.store import Registry

        self.registry = Registry(settings.registry_database, settings.artifact_root)

    def _run(self, coroutine_factory: Any) -> Any:
        async def main() -> Any:
            with ThreadPoolExecutor(2, thread_name_prefix="inferline-cli") as executor:
                return await coroutine_factory(executor)

        try:
            return asyncio.run(main())
        except InferlineError as exc:
            raise ControlError(exc.message) from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InferlineError as exc:
            raise ControlError(exc.message) from exc

    def models(self) -> list[dict[str, Any]]:
        rows = []
        for name in self._call(self.registry.model_names):
            versions = self.registry.versions(name)
            rows.append(
                {
                    "name": name,
                    "latest": versions[-1].version if versions else None,
                    "versions_count": len(versions),
                    "aliases": self.registry.aliases(name),
                }
            )
        return rows

    def show(self, name: str) -> dict[str, Any]:
        versions = self._call(self.registry.versions, name)
        return {
            "name": name,
            "latest": versions[-1].version if versions else None,
            "aliases": self.registry.aliases(name),
            "versions": [v.to_json() for v in versions],
        }

    def version(self, name: str, ref: str) -> dict[str, Any]:
        return dict(self._call(self.registry.resolve, name, ref).to_json())

    def register(self, name: str, source: Path, **options: Any) -> dict[str, Any]:
        from inferline import lifecycle

        record = self._run(
            lambda ex: lifecycle.register(self.registry, name, source, ex, **options)
        )
        return dict(record.to_json())

    def alias(self, name: str, alias: str, version: int, allow_change: bool) -> dict[str, Any]:
        from inferline import lifecycle

        previous = self._run(
            lambda ex: lifecycle.promote(
                self.registry, name, version, ex, alias=alias, allow_signature_change=allow_change
            )
        )
        return {"name": name, "alias": alias, "version": version, "previous": previous}

    def rollback(self, name: str, alias: str) -> dict[str, Any]:
        from inferline import lifecycle

        version = self._run(lambda ex: lifecycle.rollback(self.registry, name, ex, alias=alias))
        return {"name": name, "alias": alias, "version": version}

    def delete(self, name: str, version: int) -> dict[str, Any]:
        self._call(self.registry.delete_version, name, version)
        return {"name": name, "version": version, "deleted": True}

    def audit(self, name: str | None) -> list[dict[str, Any]]:
        return [e.to_json() for e in self._call(self.registry.audit, name)]


class RemoteControl:
    """The same commands through a running server's ``/api/v1`` routes."""

    def __init__(self, server: str, timeout: float = 300.0, token: str | None = None) -> None:
        import httpx

        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=server.rstrip("/"), timeout=timeout, headers=headers)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ControlError(f"cannot reach {self.client.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ControlError(f"{message} (HTTP {response.status_code})")
        return response.json()

    def models(self) -> list[dict[str, Any]]:
        return list(self._send("GET", "/api/v1/models"))

    def show(self, name: str) -> dict[str, Any]:
        return dict(self._send("GET", f"/api/v1/models/{name}"))

    def version(self, name: str, ref: str) -> dict[str, Any]:
        return dict(self._send("GET", f"/api/v1/models/{name}/versions/{ref}"))

    def register(self, name: str, source: Path, **options: Any) -> dict[str, Any]:
        import orjson

        if options.get("reference") is not None:
            raise ControlError("--reference works on a local registry only (no --server)")
        params: list[tuple[str, str]] = [("filename", source.name)]
        for key in ("runtime", "description", "alias"):
            if options.get(key):
                params.append((key, str(options[key])))
        for key, value in (options.get("tags") or {}).items():
            params.append(("tag", f"{key}={value}"))
        for key in ("metrics", "settings"):
            if options.get(key):
                params.append((key, orjson.dumps(options[key]).decode()))
        if source.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                tar.add(source, arcname=".")
            content, kind = buffer.getvalue(), "application/x-tar"
        else:
            content, kind = source.read_bytes(), "application/octet-stream"
        return dict(
            self._send(
                "POST",
                f"/api/v1/models/{name}/versions",
                params=params,
                content=content,
                headers={"content-type": kind},
            )
        )

    def alias(self, name: str, alias: str, version: int, allow_change: bool) -> dict[str, Any]:
        body = {"version": version, "allow_signature_change": allow_change}
        return dict(self._send("PUT", f"/api/v1/models/{name}/aliases/{alias}", json=body))

    def rollback(self, name: str, alias: str) -> dict[str, Any]:
        return dict(self._send("POST", f"/api/v1/models/{name}/rollback", json={"alias": alias}))

    def delete(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._send("DELETE", f"/api/v1/models/{name}/versions/{version}"))

    def audit(self, name: str | None) -> list[dict[str, Any]]:
        path = f"/api/v1/models/{name}/audit" if name else "/api/v1/audit"
        return list(self._send("GET", path))
