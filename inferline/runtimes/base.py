"""The runtime contract: ``load``, ``predict``, ``unload`` and a signature.

A runtime subclasses :class:`Model`. Its ``load``/``predict``/``unload`` may be
plain functions or coroutines; :meth:`Model.bind` decides once, at load time,
how each is called, so synchronous model code runs in an executor and never on
the event loop, with no per-request ``iscoroutinefunction`` check.
"""

from __future__ import annotations

import asyncio
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

#: A sync predict faster than this (median of the warm-up) runs on the event loop.
INLINE_BELOW_SECONDS = 100e-6
WARMUP_CALLS = 16

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
        elif await self._runs_inline(executor):
            sync_predict = self.predict

            async def inline(inputs: Inputs) -> Outputs:
                return sync_predict(inputs)  # type: ignore[no-any-return]

            self._predict = inline
        else:
            loop = asyncio.get_running_loop()
            sync_predict = self.predict

            def in_executor(inputs: Inputs) -> Awaitable[Outputs]:
                return loop.run_in_executor(executor, sync_predict, inputs)

            self._predict = in_executor
        self.ready = True

    async def _runs_inline(self, executor: Executor) -> bool:
        """Whether sync ``predict`` may run on the event loop: only when it is tiny.

        A thread hop costs tens of microseconds, more than a small ONNX or tree
        model takes. ``executor: auto`` times a short warm-up (in the executor, so
        a slow model never blocks the loop) and goes inline only when the median
        call is under ``INLINE_BELOW_SECONDS``.
        """
        mode = self.settings.executor
        if mode != "auto":
            return mode == "inline"
        sample = sample_inputs(self.inputs)
        try:
            seconds = await asyncio.get_running_loop().run_in_executor(
                executor, _median_call_seconds, self.predict, sample
            )
        except Exception as exc:  # noqa: BLE001 - zeros may not suit every model; stay safe
            logger.info("model %s: warm-up on zeros failed (%s); using threads", self.name, exc)
            return False
        inline = seconds < INLINE_BELOW_SECONDS
        logger.info(
            "model %s version %s: predict takes %.0f us; runs %s",
            self.name,
            self.version,
            seconds * 1e6,
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


def _median_call_seconds(predict: Callable[[Inputs], Any], inputs: Inputs) -> float:
    predict(inputs)  # first call pays for lazy initialisation
    times = []
    for _ in range(WARMUP_CALLS):
        start = time.perf_counter()
        predict(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
