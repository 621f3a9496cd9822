"""Model lifecycle over the registry: register, promote, roll back, and follow live.

Every change that would send traffic to a version is checked first, in this
process: the version must load, warm up on zero-filled inputs, and keep the
signature its alias served before. A refused change leaves the registry as it
was but for an audit entry saying why. :class:`RegistrySync` is what a server
runs to serve what the registry says: load, warm, switch aliases atomically,
let the old version drain, unload.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, InferlineError, ModelLoadError
from inferline.registry.profile import profile_columns, read_reference
from inferline.registry.records import DEFAULT_ALIAS, ModelVersion, check_name
from inferline.registry.store import Conflict, Registry, default_actor
from inferline.runtimes.base import Model, sample_inputs
from inferline.runtimes.loader import load_model, runtime_class
from inferline.settings import ModelSettings
from inferline.types import DATATYPES

__all__ = ["RegistrySync", "guess_runtime", "load_version", "promote", "register", "rollback"]

logger = logging.getLogger(__name__)

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


def _model_settings(name: str, runtime: str, artifact: str, extra: dict[str, Any]) -> ModelSettings:
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


async def _load_checked(
    settings: ModelSettings, version: str, version_dir: Path, executor: Executor
) -> Model:
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
    settings = _model_settings(record.name, record.runtime, record.artifact, extra)
    return await _load_checked(settings, str(record.version), path.parent, executor)


async def _profile_reference(model: Model, reference: Path) -> dict[str, Any]:
    """Profile the reference features and the model's predictions on them."""
    columns = await asyncio.to_thread(read_reference, reference)
    inputs = _reference_inputs(model, columns)
    outputs = await model.infer(inputs)
    features = {}
    for spec in model.inputs:
        array = inputs[spec.name]
        if array.ndim == 2:
            names = [n for n in columns][: array.shape[1]]
            features.update({names[i]: array[:, i] for i in range(array.shape[1])})
        else:
            features[spec.name] = array.ravel()
    predictions = {}
    for name, array in outputs.items():
        if array.ndim == 1:
            predictions[name] = array
        else:
            flat = array.reshape(array.shape[0], -1)
            predictions.update({f"{name}_{i}": flat[:, i] for i in range(flat.shape[1])})
    return {
        "rows": int(next(iter(inputs.values())).shape[0]),
        "features": profile_columns(features),
        "predictions": profile_columns(predictions),
    }


def _reference_inputs(model: Model, columns: dict[str, Any]) -> dict[str, Any]:
    """Reference columns as model inputs: by name, or all columns as one 2-D input."""
    specs = model.inputs
    if len(specs) == 1 and len(specs[0].shape) == 2:
        spec = specs[0]
        width = spec.shape[1]
        if width not in (-1, len(columns)):
            raise BadRequest(
                f"reference data has {len(columns)} columns; input {spec.name!r} takes {width}"
            )
        dtype = DATATYPES[spec.datatype].dtype
        return {spec.name: np.column_stack([columns[c] for c in columns]).astype(dtype)}
    missing = [s.name for s in specs if s.name not in columns]
    if missing:
        raise BadRequest(f"reference data lacks column(s) {', '.join(missing)}")
    inputs = {}
    for spec in specs:
        values = columns[spec.name]
        if spec.datatype == "BYTES":
            values = np.array([str(v).encode() for v in values], dtype=object)
        else:
            values = values.astype(DATATYPES[spec.datatype].dtype)
        inputs[spec.name] = (
            values.reshape(-1, *[d for d in spec.shape[1:]]) if len(spec.shape) > 1 else values
        )
    return inputs


def _inspect(path: Path) -> tuple[Path, bool, bool]:
    resolved = path.resolve()
    return resolved, resolved.exists(), resolved.is_dir()


def _signature(model: Model) -> dict[str, Any]:
    return {
        "inputs": [s.model_dump(exclude_none=True) for s in model.inputs],
        "outputs": [s.model_dump(exclude_none=True) for s in model.outputs],
    }


async def register(
    registry: Registry,
    name: str,
    source: Path,
    executor: Executor,
    *,
    runtime: str | None = None,
    settings: dict[str, Any] | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    reference: Path | None = None,
    alias: str | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """Check the artifact loads and answers, then add it as the next version."""
    check_name(name)
    actor = actor or default_actor()
    source, exists, is_dir = await asyncio.to_thread(_inspect, source)
    if not exists:
        raise BadRequest(f"artifact {source} does not exist")
    runtime = runtime or guess_runtime(source)
    extra = dict(settings or {})
    model_settings = _model_settings(name, runtime, source.name, extra)
    try:
        model = await _load_checked(
            model_settings, "candidate", source if is_dir else source.parent, executor
        )
    except InferlineError as exc:
        await asyncio.to_thread(
            registry.record,
            "register",
            name,
            None,
            f"refused: {exc.message}",
            ok=False,
            actor=actor,
        )
        raise
    try:
        profile = None
        if reference is not None:
            profile = await _profile_reference(model, reference)
        record = await asyncio.to_thread(
            registry.register,
            name,
            source,
            runtime=runtime,
            signature=_signature(model),
            settings=extra,
            description=description,
            tags=tags,
            metrics=metrics,
            profile=profile,
            actor=actor,
        )
    finally:
        await model.release(executor)
    if alias is not None:
        await asyncio.to_thread(registry.set_alias, name, alias, record.version, actor)
        record = await asyncio.to_thread(registry.get, name, record.version)
    return record


async def _move_alias(
    registry: Registry,
    name: str,
    version: int,
    alias: str,
    executor: Executor,
    *,
    kind: str,
    actor: str,
    allow_signature_change: bool,
) -> int | None:
    action = "promote" if kind == "move" else "rollback"
    try:
        record = await asyncio.to_thread(registry.get, name, version)
        current = (await asyncio.to_thread(registry.aliases, name)).get(alias)
        if current is not None and current != version and not allow_signature_change:
            before = await asyncio.to_thread(registry.get, name, current)
            if before.signature.get("inputs") != record.signature.get("inputs"):
                raise Conflict(
                    f"model {name!r} version {version} takes different inputs than version "
                    f"{current} behind {alias!r}; clients would break "
                    "(use --allow-signature-change to move it anyway)"
                )
        model = await load_version(registry, record, executor)
        await model.release(executor)
    except InferlineError as exc:
        await asyncio.to_thread(
            registry.record, action, name, version, f"refused: {exc.message}", ok=False, actor=actor
        )
        raise
    return await asyncio.to_thread(registry.set_alias, name, alias, version, actor, kind=kind)


async def promote(
    registry: Registry,
    name: str,
    version: int,
    executor: Executor,
    *,
    alias: str = DEFAULT_ALIAS,
    actor: str | None = None,
    allow_signature_change: bool = False,
) -> int | None:
    """Point ``alias`` at ``version`` once it loads and warms up here; returns the previous."""
    return await _move_alias(
        registry,
        name,
        version,
        alias,
        executor,
        kind="move",
        actor=actor or default_actor(),
        allow_signature_change=allow_signature_change,
    )


async def rollback(
    registry: Registry,
    name: str,
    executor: Executor,
    *,
    alias: str = DEFAULT_ALIAS,
    actor: str | None = None,
) -> int:
    """Move ``alias`` back to the version it pointed at before its latest move."""
    target = await asyncio.to_thread(registry.rollback_target, name, alias)
    await _move_alias(
        registry,
        name,
        target,
        alias,
        executor,
        kind="rollback",
        actor=actor or default_actor(),
        allow_signature_change=True,
    )
    return target


class RegistrySync:
    """Keeps a data plane serving what the registry says, with no failed requests."""

    def __init__(self, registry: Registry, dataplane: DataPlane, poll_seconds: float) -> None:
        self.registry = registry
        self.dataplane = dataplane
        self.poll_seconds = poll_seconds
        self._generation = -1
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        #: Models unloaded through the repository API: not served until loaded again.
        self._unloaded: set[str] = set()

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        await self.sync()
        self._task = asyncio.create_task(self._poll(), name="inferline-registry-sync")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
            except InferlineError as exc:  # registry briefly unreachable: keep serving
                logger.warning("registry sync failed: %s", exc.message)

    async def sync(self, force: bool = False) -> None:
        """Reconcile once if the registry changed since the last look."""
        if self._lock is None:
            raise RuntimeError("RegistrySync.start() has not run")
        async with self._lock:
            generation = await asyncio.to_thread(self.registry.generation)
            if generation == self._generation and not force:
                return
            plan = await asyncio.to_thread(self.registry.serving_plan)
            for name in self._unloaded:
                plan.pop(name, None)
            for name, (wanted, aliases, _latest) in plan.items():
                await self._reconcile(name, wanted, aliases)
            for name in set(self.dataplane.model_names()) - set(plan):
                for version in self.dataplane.versions(name):
                    await self.dataplane.remove(name, version)
            self._generation = generation
            gc.collect()  # unloaded models often sit in reference cycles

    async def load(self, name: str) -> None:
        """Serve a model again (repository extension ``load``)."""
        await asyncio.to_thread(self.registry.versions, name)  # 404 for an unknown model
        self._unloaded.discard(name)
        await self.sync(force=True)
        if name not in self.dataplane.model_names():
            raise ModelLoadError(f"model {name!r} could not be loaded; see the audit log")

    async def unload(self, name: str) -> None:
        """Stop serving a model on this server (repository extension ``unload``)."""
        await asyncio.to_thread(self.registry.versions, name)
        self._unloaded.add(name)
        await self.sync(force=True)

    async def _reconcile(self, name: str, wanted: set[int], aliases: dict[str, int]) -> None:
        plane = self.dataplane
        loaded = set(plane.versions(name)) if name in plane.model_names() else set()
        for number in sorted(wanted):
            if str(number) in loaded:
                continue
            try:
                record = await asyncio.to_thread(self.registry.get, name, number)
                await plane.add(await load_version(self.registry, record, plane.executor))
                loaded.add(str(number))
            except InferlineError as exc:
                logger.error("model %s version %s not served: %s", name, number, exc.message)
                await asyncio.to_thread(
                    self.registry.record,
                    "load",
                    name,
                    number,
                    f"server refused: {exc.message}",
                    ok=False,
                    actor=default_actor(),
                )
        if not loaded:
            return
        current = plane.aliases(name)
        # An alias whose new version failed to load keeps pointing at the old one.
        mapping = {
            alias: str(v) if str(v) in loaded else current[alias]
            for alias, v in aliases.items()
            if str(v) in loaded or alias in current
        }
        plane.set_aliases(name, mapping)
        keep = {str(v) for v in wanted} | set(mapping.values())
        for version in sorted(loaded - keep):
            await plane.remove(name, version)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("registry sync stopped", exc_info=task.exception())
