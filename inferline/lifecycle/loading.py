"""Loading a version: find its runtime, check, load and warm it up, before any traffic."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from inferline.errors import BadRequest, ModelLoadError
from inferline.registry.records import ModelVersion
from inferline.registry.store import Registry
from inferline.runtimes.base import Model, sample_inputs
from inferline.runtimes.loader import load_model, runtime_class
from inferline.settings import ModelSettings

__all__ = [
    "guess_runtime",
    "load_checked",
    "load_version",
    "model_settings",
    "signature_of",
    "warm_up",
]

_SUFFIX_RUNTIMES = {
    ".onnx": "onnx",
    ".skops": "sklearn",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".ubj": "xgboost",
    ".bst": "xgboost",
    ".json": "xgboost",
    ".txt": "lightgbm",
    ".pt": "torch",
    ".pth": "torch",
    ".torchscript": "torch",
    ".py": "python",
}


def guess_runtime(source: Path) -> str:
    if source.is_dir() and (source / "MLmodel").is_file():
        return "mlflow"
    runtime = _SUFFIX_RUNTIMES.get(source.suffix.lower())
    if runtime is None:
        raise BadRequest(f"cannot tell the runtime of {source.name}; pass --runtime")
    return runtime


def model_settings(name: str, runtime: str, artifact: str, extra: dict[str, Any]) -> ModelSettings:
    fields = {k: v for k, v in extra.items() if k not in ("name", "runtime", "artifact")}
    try:
        return ModelSettings(name=name, runtime=runtime, artifact=artifact, **fields)
    except ValueError as exc:
        raise BadRequest(f"invalid model settings for {name!r}: {exc}") from exc


async def warm_up(model: Model) -> None:
    """A few inferences on zeros: a version that cannot answer never takes traffic."""
    count = model.settings.warmup_requests
    if not count:
        return
    sample = sample_inputs(model.inputs)
    for _ in range(count):
        try:
            await model.infer(sample)
        except Exception as exc:
            raise ModelLoadError(
                f"model {model.name!r} version {model.version} failed its warm-up: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


async def load_checked(
    settings: ModelSettings, version: str, version_dir: Path, executor: Executor
) -> Model:
    """The one way a version is loaded, from a model folder, the repository API or the
    registry: artifact found and hash-checked, model loaded (both off the event loop),
    then warmed up; only a model that passed all three may take traffic."""
    model = await load_model(settings, version, version_dir, executor)
    try:
        await warm_up(model)
    except ModelLoadError:
        await model.release(executor)
        raise
    return model


async def load_version(registry: Registry, record: ModelVersion, executor: Executor) -> Model:
    """Load a registered version from the artifact folder (hash checked) and warm it up."""
    is_file = runtime_class(record.runtime).artifact_is_dir is False
    path = await asyncio.to_thread(
        registry.artifacts.path, record.sha256, record.artifact, verify=not is_file
    )
    extra = dict(record.settings)
    if is_file:
        extra["sha256"] = record.sha256  # the loader hashes the file once, as it reads it
    settings = model_settings(record.name, record.runtime, record.artifact, extra)
    return await load_checked(settings, str(record.version), path.parent, executor)


def signature_of(model: Model) -> dict[str, Any]:
    return {
        "inputs": [s.model_dump(exclude_none=True) for s in model.inputs],
        "outputs": [s.model_dump(exclude_none=True) for s in model.outputs],
    }


def inspect_path(path: Path) -> tuple[Path, bool]:
    resolved = path.resolve()
    return resolved, resolved.exists()
