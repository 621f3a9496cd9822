"""Where a batch job finds its model.

This is the one place that resolves a model name and version to files. Today it
reads a model folder (``--model-dir``, ``INFERLINE_MODEL_DIR``) with the same scan
the server uses; when the registry lands, :func:`locate` is the function to point
at it, and nothing else in :mod:`inferline.batch` needs to change.
"""

from __future__ import annotations

from pathlib import Path

from inferline.errors import ModelNotFound
from inferline.repository import scan_model_dir, version_key
from inferline.settings import ModelSettings, Settings

__all__ = ["locate", "model_folder"]


def model_folder(model_dir: str | Path | None, settings: Settings) -> Path:
    """The folder to read models from: the argument, else the settings' ``model_dir``."""
    folder = model_dir if model_dir is not None else settings.model_dir
    if folder is None:
        raise ValueError(
            "batch jobs read models from a model folder: pass --model-dir or set "
            "INFERLINE_MODEL_DIR"
        )
    return Path(folder)


def locate(name: str, version: str | None, model_dir: Path) -> tuple[ModelSettings, str, Path]:
    """The model's settings, the resolved version (None: the newest) and its folder."""
    folders = {folder.settings.name: folder for folder in scan_model_dir(model_dir)}
    folder = folders.get(name)
    if folder is None:
        known = ", ".join(sorted(folders)) or "none"
        raise ModelNotFound(f"model {name!r} not found in {model_dir}; models there: {known}")
    if not version:
        version = max(folder.versions, key=version_key)
    version_dir = folder.versions.get(version)
    if version_dir is None:
        available = ", ".join(folder.versions)
        raise ModelNotFound(f"model {name!r} has no version {version!r}; available: {available}")
    return folder.settings, version, version_dir
