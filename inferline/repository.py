"""The model folder: ``<name>/model-settings.yaml`` plus one folder per version.

It only finds models; :func:`inferline.lifecycle.serve_folder` loads them, the
same way the registry's versions are loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from inferline.errors import InferlineError, ModelLoadError
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


def scan_model_dir(model_dir: Path, broken: dict[str, str] | None = None) -> list[ModelFolder]:
    """Every model folder under ``model_dir``; a broken one is logged and skipped (and
    put in ``broken``, name → reason, when given)."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    found: list[ModelFolder] = []
    for folder in sorted(p for p in model_dir.iterdir() if (p / MODEL_SETTINGS_FILE).is_file()):
        try:
            settings = load_model_settings(folder)
        except InferlineError as exc:
            logger.error("skipping %s: %s", folder, exc.message)
            if broken is not None:
                broken[folder.name] = exc.message
            continue
        names = sorted(
            (p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=version_key,
        )
        if not names:
            reason = f"no version folders (e.g. {folder}/1/)"
            logger.error("skipping %s: %s", folder, reason)
            if broken is not None:
                broken[settings.name] = reason
            continue
        found.append(ModelFolder(settings, {name: folder / name for name in names}))
    return found
