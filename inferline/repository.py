"""The model folder: ``<name>/model-settings.yaml`` plus one folder per version.

It only finds and loads models; where an artifact came from (a folder here, the
registry later) does not matter to :func:`inferline.runtimes.loader.load_model`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from inferline.errors import InferlineError, ModelLoadError
from inferline.runtimes.base import Model
from inferline.runtimes.loader import load_model
from inferline.settings import MODEL_SETTINGS_FILE, ModelSettings, load_model_settings

__all__ = ["ModelFolder", "scan_model_dir", "version_key"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelFolder:
    settings: ModelSettings
    #: version name → version folder, newest last.
    versions: dict[str, Path] = field(default_factory=dict)


def version_key(version: str) -> tuple[int, int | str]:
    """Numeric versions sort numerically and after named ones."""
    return (1, int(version)) if version.isascii() and version.isdigit() else (0, version)


def scan_model_dir(model_dir: Path) -> list[ModelFolder]:
    """Every model folder under ``model_dir``; a broken one is logged and skipped."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    found: list[ModelFolder] = []
    for folder in sorted(p for p in model_dir.iterdir() if (p / MODEL_SETTINGS_FILE).is_file()):
        try:
            settings = load_model_settings(folder)
        except InferlineError as exc:
            logger.error("skipping %s: %s", folder, exc.message)
            continue
        names = sorted(
            (p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=version_key,
        )
        if not names:
            logger.error("skipping %s: no version folders (e.g. %s/1/)", folder, folder)
            continue
        found.append(ModelFolder(settings, {name: folder / name for name in names}))
    return found


async def load_folder(model: ModelFolder, executor: Executor) -> list[Model]:
    """Load every version of one model folder; a failing version is logged and skipped."""
    loaded = []
    for version, path in model.versions.items():
        try:
            loaded.append(await load_model(model.settings, version, path, executor))
        except InferlineError as exc:
            logger.error(
                "model %s version %s not served: %s", model.settings.name, version, exc.message
            )
    return loaded
