"""inferline: serve trained models online, in batch and on streams."""

from __future__ import annotations

from typing import Any

from inferline._version import __version__
from inferline.errors import (
    BadRequest,
    DeadlineExceeded,
    InferlineError,
    InternalError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
)
from inferline.runtimes.base import Model
from inferline.settings import ModelSettings, Settings

__all__ = [
    "BadRequest",
    "DeadlineExceeded",
    "InferlineError",
    "InternalError",
    "InvalidInput",
    "Model",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelSettings",
    "PayloadTooLarge",
    "QueueFull",
    "Settings",
    "__version__",
    "serve",
]


def serve(settings: Settings | None = None, **fields: Any) -> None:
    """Serve a model folder from Python: ``inferline.serve(model_dir="models")``."""
    from inferline import server

    server.run(settings or Settings(**fields))
