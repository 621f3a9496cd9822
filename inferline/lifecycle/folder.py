"""Serving a model folder: every version loads through :func:`load_checked`.

The same path as the registry's: artifact checked, loaded and warmed up off the
event loop, then added to the data plane. A version that fails is reported (the
repository index and readiness say why), not silently skipped.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from inferline.errors import InferlineError, ModelLoadError, ModelNotFound
from inferline.lifecycle.loading import load_checked
from inferline.lifecycle.serving import ServingPlane
from inferline.repository import ModelFolder, scan_model_dir

__all__ = ["serve_folder", "unload_folder_model"]

logger = logging.getLogger(__name__)


async def serve_folder(plane: ServingPlane, model_dir: Path, only: str | None = None) -> None:
    """Load the models of ``model_dir`` (or just model ``only``, replacing what serves)."""
    broken: dict[str, str] = {}
    folders = await asyncio.to_thread(scan_model_dir, model_dir, broken)
    if only is not None:
        folders = [f for f in folders if f.settings.name == only]
        broken = {name: reason for name, reason in broken.items() if name == only}
        if not folders and not broken:
            raise ModelNotFound(f"model {only!r} is not in the model folder {model_dir}")
    for name, reason in broken.items():
        await _drop(plane, name)
        plane.unserved.mark_failed(name, "", reason)
    for folder in folders:
        if only is not None:
            await _drop(plane, folder.settings.name)
        await _load_folder(plane, folder)
    if only is not None and only not in plane.model_names():
        raise ModelLoadError(f"model {only!r} could not be loaded: {_reasons(plane, only)}")


def _reasons(plane: ServingPlane, name: str) -> str:
    failures = plane.unserved.failures(name)
    return "; ".join(f"version {v}: {r}" if v else r for v, r in failures.items()) or "unknown"


async def unload_folder_model(plane: ServingPlane, name: str) -> None:
    """Stop serving a model (and reporting its failures) until it is loaded again."""
    if name not in plane.model_names() and not plane.unserved.failures(name):
        raise ModelNotFound(f"model {name!r} not found")
    await _drop(plane, name)


async def _drop(plane: ServingPlane, name: str) -> None:
    for version in plane.versions(name) if name in plane.model_names() else []:
        await plane.remove(name, version)
    plane.unserved.forget_failed(name)


async def _load_folder(plane: ServingPlane, folder: ModelFolder) -> None:
    """Every version of one model folder; one that fails is reported, the others serve."""
    name = folder.settings.name
    for version, path in folder.versions.items():
        try:
            model = await load_checked(folder.settings, version, path, plane.executor)
        except InferlineError as exc:
            logger.error("model %s version %s not served: %s", name, version, exc.message)
            plane.unserved.mark_failed(name, version, exc.message)
            continue
        await plane.add(model)
