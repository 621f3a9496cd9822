"""The runtime contract: ``load``, ``predict``, ``unload`` and a signature.

A runtime subclasses :class:`Model`. Its ``load``/``predict``/``unload`` may be
plain functions or coroutines; :meth:`Model.bind` decides once, at load time,
how each is called, so synchronous model code runs in an executor and never on
the event loop, with no per-request ``iscoroutinefunction`` check.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferline.digests import sha256_of
from inferline.errors import ModelLoadError
from inferline.settings import ModelSettings, TensorSpec
from inferline.types import DATATYPES

__all__ = [
    "AsyncPredict",
    "Inputs",
    "Model",
    "Outputs",
    "count_rows",
    "resolve_artifact",
    "sample_inputs",
    "sha256_of",
]

logger = logging.getLogger(__name__)

#: A sync predict faster than this (median of the probe) may run on the event loop.
INLINE_BELOW_SECONDS = 100e-6
#: Most timed calls of the ``executor: auto`` probe (within ``probe_budget_ms``).
PROBE_CALLS = 16

Inputs = Mapping[str, np.ndarray[Any, Any]]
Outputs = Mapping[str, np.ndarray[Any, Any]]
AsyncPredict = Callable[[Inputs], Awaitable[Outputs]]


def count_rows(tensors: Inputs) -> int:
    """Rows in a request or an answer: the first tensor's first dimension (1 for a
    scalar, 0 for none), the dimension batching splits and merges along."""
    for array in tensors.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


class Model:
    """Base class of every runtime.

    Subclasses implement ``load`` (read ``self.artifact``; fill ``self.inputs`` and
    ``self.outputs`` where the format carries a signature) and ``predict`` (a
    mapping of input name to array in, output name to array out, the first
    dimension being the batch). ``__init__`` only stores: no I/O.
    """

    #: Artifact file endings this runtime looks for in a version folder.
    artifact_suffixes: ClassVar[tuple[str, ...]] = ()
    #: True when the artifact is a folder (e.g. an MLflow model) rather than a file.
    artifact_is_dir: ClassVar[bool] = False
    #: True when the library compares strings, not bytes (onnxruntime, scikit-learn):
    #: BYTES inputs are then decoded from UTF-8 to ``str`` before the request is
    #: queued, and bytes that are not UTF-8 are refused with a 400 naming the input.
    text_inputs: bool = False

    def __init__(self, settings: ModelSettings, version: str, artifact: Path) -> None:
        self.settings = settings
        self.version = version
        self.artifact = artifact
        self.inputs: list[TensorSpec] = list(settings.inputs or ())
        self.outputs: list[TensorSpec] = list(settings.outputs or ())
        self.ready = False
        self._predict: AsyncPredict | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    def load(self) -> Any:
        """Read the artifact; may be ``async def`` in a subclass."""
        raise NotImplementedError

    def predict(self, inputs: Inputs) -> Any:
        """Run the model on a batch; may be ``async def`` in a subclass."""
        raise NotImplementedError

    def unload(self) -> Any:
        """Release what ``load`` took; may be ``async def`` in a subclass."""
        return None

    async def bind(self, executor: Executor) -> None:
        """Load the model and fix, once, how ``predict`` is awaited."""
        declared_inputs, declared_outputs = self.settings.inputs, self.settings.outputs
        await _call(self.load, executor)
        # Settings override what the format says about itself.
        if declared_inputs:
            self.inputs = list(declared_inputs)
        if declared_outputs:
            self.outputs = list(declared_outputs)
        if not self.inputs:
            raise ModelLoadError(
                f"model {self.name!r}: the {type(self).__name__} format carries no input "
                "signature; declare 'inputs' in model-settings.yaml"
            )
        if inspect.iscoroutinefunction(self.predict):
            self._predict = self.predict
        else:
            self._predict = await self._bind_sync(executor)
        self.ready = True

    async def _bind_sync(self, executor: Executor) -> AsyncPredict:
        """A sync ``predict`` as a coroutine: in the pool (bounded), or inline when tiny."""
        sync_predict = self.predict
        pooled = _bounded(executor, sync_predict, self.settings.max_threads or _share(executor))
        mode = self.settings.executor
        if mode == "thread" or (mode == "auto" and not await self._is_tiny(executor)):
            return pooled
        if mode == "inline":

            async def inline(inputs: Inputs) -> Outputs:
                return sync_predict(inputs)  # type: ignore[no-any-return]

            return inline
        max_rows = self.settings.inline_max_rows

        async def inline_when_small(inputs: Inputs) -> Outputs:
            if count_rows(inputs) > max_rows:  # a big batch would stall the loop
                return await pooled(inputs)
            return sync_predict(inputs)  # type: ignore[no-any-return]

        return inline_when_small

    async def _is_tiny(self, executor: Executor) -> bool:
        """Whether a sync ``predict`` is fast enough to run on the event loop.

        A thread hop costs tens of microseconds, more than a small ONNX or tree
        model takes. ``executor: auto`` times a few calls on one row of zeros (in
        the executor, so a slow model never blocks the loop) within
        ``probe_budget_ms``, and goes inline only when the median call is under
        ``INLINE_BELOW_SECONDS``; a model whose first call alone outlasts the
        budget is called once.
        """
        sample = sample_inputs(self.inputs)
        budget = self.settings.probe_budget_ms / 1000
        try:
            seconds = await asyncio.get_running_loop().run_in_executor(
                executor, _probe_seconds, self.predict, sample, budget
            )
        except Exception as exc:  # noqa: BLE001 - zeros may not suit every model; stay safe
            logger.info("model %s: probe on zeros failed (%s); using threads", self.name, exc)
            return False
        inline = seconds is not None and seconds < INLINE_BELOW_SECONDS
        logger.info(
            "model %s version %s: predict takes %s; runs %s",
            self.name,
            self.version,
            "longer than the probe budget" if seconds is None else f"{seconds * 1e6:.0f} us",
            "inline" if inline else "in the thread pool",
        )
        return inline

    async def release(self, executor: Executor) -> None:
        self.ready = False
        self._predict = None
        await _call(self.unload, executor)

    @property
    def infer(self) -> AsyncPredict:
        """The bound predict; only valid after :meth:`bind`."""
        if self._predict is None:
            raise ModelLoadError(f"model {self.name!r} version {self.version} is not loaded")
        return self._predict


def sample_inputs(specs: list[TensorSpec]) -> dict[str, np.ndarray[Any, Any]]:
    """One row of zeros (empty strings for BYTES) per input, shaped by the signature."""
    sample = {}
    for spec in specs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            array = np.full(shape, b"", dtype=object)
        else:
            array = np.zeros(shape, dtype=DATATYPES[spec.datatype].dtype)
        sample[spec.name] = array
    return sample


def _probe_seconds(predict: Callable[[Inputs], Any], inputs: Inputs, budget: float) -> float | None:
    """Median time of up to ``PROBE_CALLS`` calls made within ``budget`` seconds (None:
    not one call fitted after the first, which pays for lazy initialisation)."""
    began = time.perf_counter()
    predict(inputs)
    times: list[float] = []
    while len(times) < PROBE_CALLS and time.perf_counter() - began < budget:
        start = time.perf_counter()
        predict(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) if times else None


def _share(executor: Executor) -> int:
    """A model's default share of the pool: all threads but one, so one slow model
    always leaves a thread to the others (the whole pool when it has one thread)."""
    workers = getattr(executor, "_max_workers", 1)
    return max(1, int(workers) - 1)


def _bounded(executor: Executor, predict: Callable[[Inputs], Any], limit: int) -> AsyncPredict:
    """``predict`` in ``executor``, at most ``limit`` calls of this model at once.

    A slot is held until the *thread* returns, not until the caller stops waiting:
    a call past its timeout keeps its thread, so it keeps its slot, and a slow
    model waits for its own slots instead of taking the other models' threads.
    """
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(limit)

    def release_from_thread(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while it ran (shutdown)
            loop.call_soon_threadsafe(slots.release)

    async def run(inputs: Inputs) -> Outputs:
        await slots.acquire()
        try:
            future = executor.submit(predict, inputs)
        except BaseException:
            slots.release()
            raise
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.done():
                slots.release()
            else:  # cancelled while the thread runs: free the slot when it returns
                future.add_done_callback(release_from_thread)

    return run


async def _call(fn: Callable[[], Any], executor: Executor) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn()
    result = await asyncio.get_running_loop().run_in_executor(executor, fn)
    if inspect.isawaitable(result):
        return await result
    return result


def resolve_artifact(version_dir: Path, settings: ModelSettings, runtime: type[Model]) -> Path:
    """Pick the artifact inside a version folder and check its pinned SHA-256."""
    if not version_dir.is_dir():
        raise ModelLoadError(f"version folder {version_dir} does not exist")
    if settings.artifact:
        candidate = (version_dir / settings.artifact).resolve()
        if version_dir.resolve() not in candidate.parents:
            raise ModelLoadError(f"artifact {settings.artifact!r} points outside {version_dir}")
        if not candidate.exists():
            raise ModelLoadError(f"artifact {candidate} does not exist")
        artifact = candidate
    elif runtime.artifact_is_dir:
        artifact = version_dir
    else:
        files = sorted(
            p for p in version_dir.iterdir() if p.is_file() and not p.name.startswith(".")
        )
        matching = [p for p in files if p.name.endswith(runtime.artifact_suffixes)] or files
        if len(matching) != 1:
            found = ", ".join(p.name for p in files) or "nothing"
            raise ModelLoadError(
                f"{version_dir}: expected one artifact file, found {found}; "
                "set 'artifact' in model-settings.yaml"
            )
        artifact = matching[0]
    if settings.sha256 and artifact.is_file():
        actual = sha256_of(artifact)
        if actual != settings.sha256.lower():
            raise ModelLoadError(
                f"{artifact}: SHA-256 is {actual}, model-settings.yaml pins {settings.sha256}"
            )
    return artifact
