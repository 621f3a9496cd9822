"""Management over HTTP: the V2 repository extension and the registry API (``/api/v1``).

Everything the ``inferline models`` command does locally it can do through
these routes (``--server URL``). Writes go through :mod:`inferline.lifecycle`,
so a version that fails to load or warm up never takes traffic, whichever way
the change was asked for.
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline import lifecycle
from inferline.codecs import json_object
from inferline.dataplane import DataPlane
from inferline.digests import sha256_of
from inferline.errors import (
    BadRequest,
    ModelLoadError,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    Unprocessable,
)
from inferline.lifecycle import RegistrySync, guess_runtime
from inferline.protocols.v2_rest import json_response, read_body
from inferline.registry.records import DEFAULT_ALIAS, check_alias, check_name, parse_version
from inferline.registry.store import Registry
from inferline.settings import Settings

__all__ = ["routes"]

Handler = Callable[[Request], Awaitable[Response]]

#: Largest artifact an upload may carry.
MAX_UPLOAD_BYTES = 4 * 1024**3
#: Runtimes whose artifact is Python code, or may unpickle some (MLflow pyfunc).
_CODE_RUNTIMES = frozenset({"python", "mlflow"})
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def routes(dataplane: DataPlane, sync: RegistrySync | None) -> list[Route]:
    """Repository extension routes always; registry routes when serving a registry."""

    settings = dataplane.settings
    limit = settings.max_body_bytes

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await read_body(request, limit)  # the inference routes' limit, checked first
        return json_object(raw) if raw else {}

    def registry() -> Registry:
        if sync is None:
            raise Unavailable("this server serves a model folder, not a registry")
        return sync.registry

    async def index(request: Request) -> Response:
        entries = dataplane.index()
        if sync is not None:  # registered models this server does not serve
            known = {entry["name"] for entry in entries}
            for name in await asyncio.to_thread(sync.registry.model_names):
                if name not in known:
                    entries.append(
                        {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
                    )
            entries.sort(key=lambda entry: entry["name"])
        return json_response(request, entries)

    async def load(request: Request) -> Response:
        name = check_name(request.path_params["model"])
        if sync is not None:
            await sync.load(name)
        else:
            model_dir = dataplane.settings.model_dir
            if model_dir is None:  # pragma: no cover - folder mode always has one
                raise Unavailable("no model folder configured")
            await lifecycle.serve_folder(dataplane, model_dir, only=name)
        return json_response(request, {"name": name, "state": "READY"})

    async def unload(request: Request) -> Response:
        name = check_name(request.path_params["model"])
        if sync is not None:
            await sync.unload(name)
        else:
            await lifecycle.unload_folder_model(dataplane, name)
        return json_response(request, {"name": name, "state": "UNAVAILABLE"})

    async def list_models(request: Request) -> Response:
        reg = registry()
        result = []
        for name in await asyncio.to_thread(reg.model_names):
            versions = await asyncio.to_thread(reg.versions, name)
            result.append(_summary(name, versions, await asyncio.to_thread(reg.aliases, name)))
        return json_response(request, result)

    async def show_model(request: Request) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        versions = await asyncio.to_thread(reg.versions, name)
        summary = _summary(name, versions, await asyncio.to_thread(reg.aliases, name))
        summary["versions"] = [v.to_json() for v in versions]
        return json_response(request, summary)

    async def show_version(request: Request) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        record = await asyncio.to_thread(reg.resolve, name, request.path_params["version"])
        return json_response(request, record.to_json())

    async def register(request: Request) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        query = request.query_params
        filename = query.get("filename") or ""
        if not filename or "/" in filename or filename in (".", ".."):
            raise BadRequest("query parameter 'filename' must name the artifact file")
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="inferline-upload-"))
        try:
            source = await _receive(request, workdir, filename)
            runtime = query.get("runtime")
            if not runtime:
                runtime = await asyncio.to_thread(guess_runtime, source)
            model_settings = _json_param(query.get("settings"), "settings") or {}
            if not isinstance(model_settings, dict):
                raise BadRequest("query parameter 'settings' must be a JSON object")
            await _check_code_upload(settings, runtime, source, model_settings)
            record = await _refuse_unloadable(
                lifecycle.register(
                    reg,
                    name,
                    source,
                    dataplane.executor,
                    runtime=runtime,
                    settings=model_settings,
                    description=query.get("description", ""),
                    tags=_tags(query.getlist("tag")),
                    metrics=_json_param(query.get("metrics"), "metrics"),
                    alias=check_alias(query["alias"]) if query.get("alias") else None,
                    actor=_actor(request),
                )
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        await sync_now()
        return json_response(request, record.to_json(), 201)

    async def set_alias(request: Request) -> Response:
        return await move_alias(request, request.path_params["alias"], await json_body(request))

    async def promote(request: Request) -> Response:
        body = await json_body(request)
        return await move_alias(request, _text(body, "alias", DEFAULT_ALIAS), body)

    async def move_alias(request: Request, alias: str, body: dict[str, Any]) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        alias = check_alias(alias)
        version = parse_version(body.get("version", ""))
        previous = await lifecycle.promote(
            reg,
            name,
            version,
            dataplane.executor,
            alias=alias,
            actor=_actor(request),
            allow_signature_change=_flag(body, "allow_signature_change"),
        )
        await sync_now()
        payload = {"name": name, "alias": alias, "version": version, "previous": previous}
        return json_response(request, payload)

    async def rollback(request: Request) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        body = await json_body(request)
        alias = check_alias(_text(body, "alias", DEFAULT_ALIAS))
        version = await lifecycle.rollback(
            reg, name, dataplane.executor, alias=alias, actor=_actor(request)
        )
        await sync_now()
        return json_response(request, {"name": name, "alias": alias, "version": version})

    async def delete_version(request: Request) -> Response:
        reg, name = registry(), check_name(request.path_params["model"])
        version = parse_version(request.path_params["version"])
        await asyncio.to_thread(reg.delete_version, name, version, _actor(request))
        await sync_now()
        return json_response(request, {"name": name, "version": version, "deleted": True})

    async def audit(request: Request) -> Response:
        name = request.path_params.get("model")
        entries = await asyncio.to_thread(registry().audit, check_name(name) if name else None)
        return json_response(request, [e.to_json() for e in entries])

    async def sync_now() -> None:
        if sync is not None:
            await sync.sync()

    return [
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", unload, methods=["POST"]),
        Route("/api/v1/models", list_models, methods=["GET"]),
        Route("/api/v1/models/{model}", show_model, methods=["GET"]),
        Route("/api/v1/models/{model}/versions", register, methods=["POST"]),
        Route("/api/v1/models/{model}/versions/{version}", show_version, methods=["GET"]),
        Route("/api/v1/models/{model}/versions/{version}", delete_version, methods=["DELETE"]),
        Route("/api/v1/models/{model}/aliases/{alias}", set_alias, methods=["PUT"]),
        Route("/api/v1/models/{model}/promote", promote, methods=["POST"]),
        Route("/api/v1/models/{model}/rollback", rollback, methods=["POST"]),
        Route("/api/v1/models/{model}/audit", audit, methods=["GET"]),
        Route("/api/v1/audit", audit, methods=["GET"]),
    ]


async def _refuse_unloadable(registration: Awaitable[Any]) -> Any:
    """An uploaded artifact that does not load is the client's to fix: 422, not a 500."""
    try:
        return await registration
    except ModelLoadError as exc:
        raise Unprocessable(exc.message) from exc


def _summary(name: str, versions: list[Any], aliases: dict[str, int]) -> dict[str, Any]:
    return {
        "name": name,
        "latest": versions[-1].version if versions else None,
        "versions_count": len(versions),
        "aliases": aliases,
    }


def _actor(request: Request) -> str:
    """Who asked, for the audit log: the principal (never its secret) and its address."""
    client = request.client.host if request.client else "unknown"
    principal = request.scope.get("state", {}).get("principal")
    name = principal.name if principal is not None else "api"
    return f"{name}@{client}"[:200]


async def _check_code_upload(
    settings: Settings, runtime: str, source: Path, model_settings: dict[str, Any]
) -> None:
    """Python code and pickles over HTTP: refused unless the server allows code upload,
    and a pickle's SHA-256 pin comes from the server's settings, never from the request
    that carries the pickle. (The route itself needs the admin role.)"""
    pickle = runtime == "sklearn" and source.suffix.lower() in _PICKLE_SUFFIXES
    code = runtime in _CODE_RUNTIMES or "." in runtime  # a dotted path names a class to import
    if "sha256" in model_settings:
        raise BadRequest(
            "an upload cannot pin its own SHA-256 (settings.sha256): the pin of a pickle "
            "comes from the server's trusted_pickle_sha256 setting"
        )
    if not (pickle or code):
        return
    what = "a pickle" if pickle else f"Python code (runtime {runtime!r})"
    if not settings.allow_code_upload:
        raise PermissionDenied(
            f"this server does not accept {what} over HTTP: register it with "
            "'inferline models register' on the registry's machine, or start the server "
            "with --allow-code-upload"
        )
    if pickle:
        digest = await asyncio.to_thread(sha256_of, source)
        trusted = {d.lower() for d in settings.trusted_pickle_sha256}
        if digest not in trusted:
            raise PermissionDenied(
                f"pickle {source.name} (SHA-256 {digest}) is not in the server's "
                "trusted_pickle_sha256 setting"
            )
        model_settings["sha256"] = digest


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadRequest(f"tag {pair!r} must look like key=value")
        tags[key] = value
    return tags


def _json_param(raw: str | None, what: str) -> Any:
    return None if raw is None else json_object(raw, f"query parameter {what!r}")


def _text(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false")
    return value


async def _receive(request: Request, workdir: Path, filename: str) -> Path:
    """Stream an upload to disk (bounded); a tar archive becomes a folder artifact."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"artifact of {declared} bytes is over the {MAX_UPLOAD_BYTES}-byte limit"
        )
    upload = workdir / "upload"
    size = 0
    with upload.open("wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(f"artifact is over the {MAX_UPLOAD_BYTES}-byte limit")
            handle.write(chunk)
    if size == 0:
        raise BadRequest("the request body (the artifact) is empty")
    if request.headers.get("content-type", "").startswith("application/x-tar"):
        return await asyncio.to_thread(_untar, upload, workdir / filename)
    target = workdir / filename
    upload.rename(target)
    return target


def _untar(archive: Path, target: Path) -> Path:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, '..' and links out
    except (tarfile.TarError, OSError) as exc:
        raise BadRequest(f"artifact archive cannot be unpacked: {exc}") from exc
    return target
