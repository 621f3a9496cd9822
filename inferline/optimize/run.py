"""``optimize``: load a version, convert it, check it answers alike, measure, register.

Nothing is registered unless every served output agrees with the source on the
reference rows; a refusal leaves the registry as it was but for an audit entry
(``optimize``, not ok) saying which output differed and by how much.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferline import lifecycle
from inferline.errors import BadRequest, ConversionRefused, InferlineError
from inferline.lifecycle.loading import load_checked, model_settings, signature_of
from inferline.optimize import check
from inferline.optimize.check import OutputCheck
from inferline.registry.profile import ReferenceData
from inferline.registry.records import ModelVersion, check_alias
from inferline.registry.store import Registry, default_actor
from inferline.runtimes.base import Inputs, Model

__all__ = ["Measurement", "Report", "optimize"]

#: Single-row calls timed for the median latency; a quarter as many 64-row batches.
TIMING_CALLS = 100
BATCH_ROWS = 64


@dataclass(frozen=True, slots=True)
class Measurement:
    """One model's speed and size, measured in this process."""

    runtime: str
    latency_ms: float  # median of single-row predictions
    throughput: float  # rows per second, in batches of BATCH_ROWS
    size: int  # artifact bytes


@dataclass(frozen=True, slots=True)
class Report:
    """What ``optimize`` did: the source, the checks, before and after, the new version."""

    source: ModelVersion
    optimization: str  # "onnx" or "onnx-int8"
    tolerance: float
    reference: str
    warning: str | None
    checks: list[OutputCheck]
    before: Measurement
    after: Measurement
    #: The optimised model serves exactly the source's inputs and outputs.
    signature_kept: bool
    #: The new version; None on a dry run.
    registered: ModelVersion | None

    @property
    def max_difference(self) -> float:
        return max((c.max_difference for c in self.checks), default=0.0)


async def optimize(
    registry: Registry,
    name: str,
    executor: Executor,
    *,
    version: str | int | None = None,
    quantize: bool = False,
    data: Path | ReferenceData | None = None,
    tolerance: float | None = None,
    alias: str | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    calls: int = TIMING_CALLS,
) -> Report:
    """Convert a version to ONNX (optionally int8), check it, and register it as the next one.

    ``version`` is a number or an alias (None: production, else the latest).
    ``tolerance`` defaults to 1e-4, or 5e-2 with ``quantize``. A dry run checks and
    measures but registers nothing and writes no audit entry.
    """
    actor = actor or default_actor()
    if tolerance is None:
        tolerance = check.INT8_TOLERANCE if quantize else check.FLOAT_TOLERANCE
    if not tolerance >= 0:
        raise BadRequest(f"tolerance must be 0 or more, not {tolerance}")
    if alias is not None:
        check_alias(alias)  # before anything is built, so a typo registers nothing
    record = await asyncio.to_thread(registry.resolve, name, version)
    try:
        return await _optimize(
            registry, record, executor, quantize, data, tolerance, alias, dry_run, actor, calls
        )
    except InferlineError as exc:
        if not dry_run:
            await asyncio.to_thread(
                registry.record,
                "optimize",
                name,
                record.version,
                f"refused: {exc.message}",
                ok=False,
                actor=actor,
            )
        raise


async def _optimize(
    registry: Registry,
    record: ModelVersion,
    executor: Executor,
    quantize: bool,
    data: Path | ReferenceData | None,
    tolerance: float,
    alias: str | None,
    dry_run: bool,
    actor: str,
    calls: int,
) -> Report:
    kind = "onnx-int8" if quantize else "onnx"
    if record.runtime == "onnx" and not quantize:
        raise ConversionRefused(
            f"model {record.name!r} version {record.version} is ONNX already; "
            "--quantize makes an int8 version of a neural network"
        )
    source = await lifecycle.load_version(registry, record, executor)
    try:
        artifact = await asyncio.to_thread(registry.artifacts.path, record.sha256, record.artifact)
        try:
            proto = await asyncio.to_thread(_build, record, artifact, source, quantize)
        except ConversionRefused as exc:
            where = f"model {record.name!r} version {record.version}"
            raise ConversionRefused(f"{where}: {exc.message}") from exc
        rows = await asyncio.to_thread(check.reference, source, record, data)
        settings = {k: v for k, v in record.settings.items() if k not in ("artifact", "sha256")}
        with tempfile.TemporaryDirectory(prefix="inferline-optimize-") as folder:
            target = (
                Path(folder) / f"{Path(record.artifact).stem}{'.int8' if quantize else ''}.onnx"
            )
            await asyncio.to_thread(target.write_bytes, proto.SerializeToString())
            candidate = await load_checked(
                model_settings(record.name, "onnx", target.name, settings),
                "candidate",
                target.parent,
                executor,
            )
            try:
                before_out = await source.infer(rows.inputs)
                after_out = await candidate.infer(rows.inputs)
                checks = check.compare(before_out, after_out, source.outputs, tolerance)
                failed = [c for c in checks if not c.ok]
                if failed:
                    raise ConversionRefused(_refusal(record, kind, failed, tolerance, rows.origin))
                before = await asyncio.to_thread(
                    _measure, source, record.runtime, rows.inputs, record.size, calls
                )
                after = await asyncio.to_thread(
                    _measure, candidate, "onnx", rows.inputs, target.stat().st_size, calls
                )
                kept = signature_of(candidate) == signature_of(source)
            finally:
                await candidate.release(executor)
            registered = None
            if not dry_run:
                registered = await lifecycle.register(
                    registry,
                    record.name,
                    target,
                    executor,
                    runtime="onnx",
                    settings=settings,
                    tags={
                        **record.tags,
                        "optimized_from": str(record.version),
                        "optimization": kind,
                    },
                    description=_description(record, quantize),
                    reference=data,
                    # Without --data, the source's profile: the answers were just
                    # checked to agree with its within tolerance.
                    profile=None if data is not None else record.profile,
                    alias=alias,
                    actor=actor,
                )
    finally:
        await source.release(executor)
    report = Report(
        record, kind, tolerance, rows.origin, rows.warning, checks, before, after, kept, registered
    )
    if registered is not None:
        detail = (
            f"version {registered.version} from version {record.version} ({kind}): "
            f"max difference {report.max_difference:.2e} on {rows.origin}"
        )
        await asyncio.to_thread(
            registry.record,
            "optimize",
            record.name,
            registered.version,
            detail,
            ok=True,
            actor=actor,
        )
    return report


def _build(record: ModelVersion, artifact: Path, source: Model, quantize: bool) -> Any:
    try:
        import onnx

        from inferline.optimize import convert

        if record.runtime == "onnx":
            model = onnx.load(str(artifact))
        else:
            # Quantization works on float32 weights: convert in float32, then quantize.
            model = convert.convert(
                record.runtime,
                artifact,
                record.sha256,
                source.inputs,
                source.outputs,
                float32=quantize,
            )
        return convert.quantize(model) if quantize else model
    except ImportError as exc:
        raise ConversionRefused(
            f"optimize needs its converters: pip install 'inferline[optimize]' ({exc})"
        ) from exc


def _refusal(
    record: ModelVersion, kind: str, failed: list[OutputCheck], tolerance: float, origin: str
) -> str:
    reasons = []
    for c in failed:
        if c.detail:
            reasons.append(c.detail)
        elif c.kind == "labels":
            reasons.append(f"output {c.name!r}: {c.changed} of {c.rows} labels changed")
        else:
            reasons.append(
                f"output {c.name!r} differs by up to {c.max_difference:.2e} "
                f"({c.changed} value(s) past the tolerance)"
            )
    return (
        f"model {record.name!r} version {record.version} as {kind} changes its outputs "
        f"beyond tolerance {tolerance:g} on {origin}: {'; '.join(reasons)}; nothing registered"
    )


def _description(record: ModelVersion, quantize: bool) -> str:
    how = "converted to ONNX" + (" and quantized to int8" if quantize else "")
    if record.runtime == "onnx":
        how = "quantized to int8"
    return f"version {record.version} ({record.runtime}) {how} by inferline optimize"


def _measure(model: Model, runtime: str, inputs: Inputs, size: int, calls: int) -> Measurement:
    """Median single-row latency and 64-row throughput, calling ``predict`` directly."""
    one, batch = _head(inputs, 1), _head(inputs, BATCH_ROWS)
    predict = model.predict
    predict(one)  # the first call may pay for lazy set-up
    times = []
    for _ in range(max(1, calls)):
        start = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - start)
    batches = max(1, calls // 4)
    start = time.perf_counter()
    for _ in range(batches):
        predict(batch)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return Measurement(
        runtime, statistics.median(times) * 1e3, BATCH_ROWS * batches / elapsed, size
    )


def _head(inputs: Inputs, rows: int) -> dict[str, np.ndarray[Any, Any]]:
    """The first ``rows`` rows, repeated when there are fewer."""
    out = {}
    for name, array in inputs.items():
        index = np.arange(rows) % max(1, array.shape[0])
        out[name] = np.take(array, index, axis=0)
    return out
