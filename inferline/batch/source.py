"""Where a batch job finds its model: a model folder, or the registry.

This is the one place that resolves a model name and version to files. With
``--model-dir`` (``INFERLINE_MODEL_DIR``) it reads that folder with the same scan
the server uses. Without one it asks the registry (a version number, an alias,
or none for ``production``/latest) and lays the version out as a one-model
folder whose version directory links to the content-addressed artifact, with its
SHA-256 pinned so every load (Spark executors included) checks the bytes. The
rest of :mod:`inferline.batch` only ever sees a model folder.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from inferline.errors import ModelNotFound
from inferline.repository import scan_model_dir, version_key
from inferline.settings import MODEL_SETTINGS_FILE, ModelSettings, Settings

__all__ = ["locate", "model_folder"]


def model_folder(
    model_dir: str | Path | None, settings: Settings, name: str, version: str | None
) -> tuple[Path, str | None, str | None]:
    """The folder to read ``name`` from, the version to ask it for, and how it was chosen.

    The argument, else the settings' ``model_dir``; with neither, the registry's
    version laid out as a folder, its number, and which rule picked it (``alias
    production``, ``latest: no production alias``...). A folder's version is picked
    later, by :func:`locate`: the third value is then None.
    """
    folder = model_dir if model_dir is not None else settings.model_dir
    if folder is not None:
        return Path(folder), version, None
    return _from_registry(settings, name, version)


def _from_registry(settings: Settings, name: str, ref: str | None) -> tuple[Path, str, str]:
    from inferline.registry.records import DEFAULT_ALIAS
    from inferline.registry.store import Registry
    from inferline.runtimes.loader import runtime_class

    registry = Registry(settings.registry_database, settings.artifact_root)
    try:
        record = registry.resolve(name, ref)
        artifact = registry.artifacts.path(record.sha256, record.artifact)
    finally:
        registry.close()
    if ref is None:
        production = DEFAULT_ALIAS in record.aliases
        chosen = f"alias {DEFAULT_ALIAS}" if production else f"latest: no {DEFAULT_ALIAS} alias"
    else:
        chosen = "as asked" if str(ref).isdigit() else f"alias {ref}"
    root = settings.home / "batch-models" / f"{name}-{record.version}-{record.sha256[:12]}"
    version_dir = root / name / str(record.version)
    if not version_dir.exists():
        version_dir.parent.mkdir(parents=True, exist_ok=True)
        pinned = dict(record.settings, runtime=record.runtime, artifact=record.artifact)
        if not runtime_class(record.runtime).artifact_is_dir:
            pinned["sha256"] = record.sha256
        (root / name / MODEL_SETTINGS_FILE).write_text(yaml.safe_dump(pinned))
        with contextlib.suppress(FileExistsError):  # a concurrent job laid it out first
            version_dir.symlink_to(artifact.parent, target_is_directory=True)
    return root, str(record.version), chosen


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
