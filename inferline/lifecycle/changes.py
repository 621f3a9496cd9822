"""Changes that could send traffic to a version: each is checked here first.

A version must load, warm up on zero-filled inputs and keep the inputs its alias
served before; a refused change leaves the registry as it was but for an audit
entry saying why.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from inferline.errors import BadRequest, Conflict, InferlineError
from inferline.lifecycle.loading import (
    guess_runtime,
    inspect_path,
    load_checked,
    load_version,
    model_settings,
    signature_of,
)
from inferline.registry.profile import ReferenceData, profile_columns, reference_data
from inferline.registry.records import DEFAULT_ALIAS, ModelVersion, check_name
from inferline.registry.store import Registry, default_actor
from inferline.runtimes.base import Model
from inferline.types import DATATYPES

__all__ = ["profile_reference", "promote", "register", "rollback"]


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
    reference: Path | ReferenceData | None = None,
    profile: dict[str, Any] | None = None,
    alias: str | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """Check the artifact loads and answers, then add it as the next version.

    ``reference`` (training data, or some of its columns) is profiled for drift and
    skew; without it, a
    ready ``profile`` is stored as given (a version derived from another one,
    whose answers were checked to agree, keeps its source's).
    """
    check_name(name)
    actor = actor or default_actor()
    source, exists = await asyncio.to_thread(inspect_path, source)
    if not exists:
        raise BadRequest(f"artifact {source} does not exist")
    runtime = runtime or guess_runtime(source)
    extra = dict(settings or {})
    candidate = model_settings(name, runtime, source.name, extra)
    try:
        # A file or a folder artifact (an MLflow model) is named inside its parent.
        model = await load_checked(candidate, "candidate", source.parent, executor)
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
        if reference is not None:
            profile = await profile_reference(model, reference)
        record = await asyncio.to_thread(
            registry.register,
            name,
            source,
            runtime=runtime,
            signature=signature_of(model),
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


async def profile_reference(model: Model, reference: Path | ReferenceData) -> dict[str, Any]:
    """Profile the reference features and the model's predictions on them."""
    columns = await asyncio.to_thread(reference_data(reference).read)
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
                f"reference data has {len(columns)} columns; input {spec.name!r} takes {width} "
                "(choose them with --features, or drop the others with --exclude)"
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
