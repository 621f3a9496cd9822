"""Find a runtime class by entry point (group ``inferline.runtimes``) or dotted path."""

from __future__ import annotations

import asyncio
import importlib
import logging
from concurrent.futures import Executor
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from inferline.errors import ModelLoadError
from inferline.runtimes.base import Model, resolve_artifact
from inferline.settings import ModelSettings

__all__ = ["load_model", "runtime_class"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "inferline.runtimes"


@cache
def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def runtime_class(name: str) -> type[Model]:
    """The class behind a runtime name; an import failure names the missing extra."""
    target = _entry_points().get(name, name)
    module_name, _, attr = target.replace(":", ".").rpartition(".")
    if not module_name:
        known = ", ".join(sorted(_entry_points()))
        raise ModelLoadError(f"unknown runtime {name!r}; known runtimes: {known}, or a dotted path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (pip install 'inferline[{name}]')" if name in _entry_points() else ""
        raise ModelLoadError(f"runtime {name!r} cannot be imported: {exc}{hint}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelLoadError(f"runtime {name!r} ({target}) is not an inferline Model subclass")
    return cls


async def load_model(
    settings: ModelSettings, version: str, version_dir: Path, executor: Executor
) -> Model:
    """Build, load and bind one model version, wherever its folder came from.

    This is the runtime half of :func:`inferline.lifecycle.load_checked`, which adds
    the warm-up; serving code loads through that, never through this directly.
    """
    # Importing the runtime, finding the file and checking its pinned hash read the
    # disk and may take seconds: never on the event loop.
    cls, artifact = await asyncio.to_thread(_locate, settings, version_dir)
    model = cls(settings, version, artifact)
    try:
        await model.bind(executor)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"model {settings.name!r} version {version} failed to load: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    logger.info("loaded model %s version %s (%s)", settings.name, version, settings.runtime)
    return model


def _locate(settings: ModelSettings, version_dir: Path) -> tuple[type[Model], Path]:
    cls = runtime_class(settings.runtime)
    return cls, resolve_artifact(version_dir, settings, cls)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """Native libraries append stack traces to their messages; users need the first line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
