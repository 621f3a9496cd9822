"""User Python code: a class in the version folder's ``model.py``.

The class (``parameters.class``, default ``Model``) is built with no arguments
and may define:

- ``load(self, path)``: read what it needs from the version folder (sync or async);
- ``predict(self, inputs)``: ``dict[str, np.ndarray]`` in and out (sync or async);
- ``preprocess(self, inputs)`` and ``postprocess(self, outputs)``: plain functions
  that run where ``predict`` runs, so in the executor for a sync ``predict`` and on
  the event loop, which they must not block, for an async one;
- ``unload(self)``.

BYTES inputs arrive as ``bytes``; a class attribute ``text_inputs = True`` makes
them ``str`` (UTF-8, decoded before the request is queued; other bytes are a 400).

Python code carries no signature: declare ``inputs`` (and ``outputs``) in
model-settings.yaml. ``model.py`` is imported under a module name unique to the
model, version and load, so two versions of one model never share a module. The
version folder is not put on ``sys.path``; ``model.py`` imports installed
packages only.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from inferline.errors import ModelLoadError
from inferline.runtimes.base import Inputs, Model, Outputs

__all__ = ["PythonModel"]

Stage = Callable[[Any], Any]

_LOADS = itertools.count(1)


class PythonModel(Model):
    """Calls a user class; its ``predict`` being sync or async is settled once, at load."""

    artifact_suffixes = (".py",)

    def load(self) -> Awaitable[None] | None:
        self._module_name = _module_name(self.name, self.version)
        module = _import(self._module_name, self.artifact)
        try:
            loading = self._bind_user(module)
        except BaseException:
            sys.modules.pop(self._module_name, None)
            raise
        # Model.bind awaits an awaitable returned here, on the event loop.
        return self._finish(loading) if inspect.isawaitable(loading) else None

    def _bind_user(self, module: ModuleType) -> Any:
        class_name = str(self.settings.parameters.get("class", "Model"))
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            classes = [name for name, value in vars(module).items() if isinstance(value, type)]
            raise ModelLoadError(
                f"model {self.name!r}: {self.artifact.name} has no class {class_name!r} "
                f"(set parameters.class; classes found: {', '.join(classes) or 'none'})"
            )
        user = cls()
        predict = getattr(user, "predict", None)
        if not callable(predict):
            raise ModelLoadError(f"model {self.name!r}: {class_name} has no predict method")
        pre = getattr(user, "preprocess", None)
        post = getattr(user, "postprocess", None)
        if any(inspect.iscoroutinefunction(stage) for stage in (pre, post)):
            raise ModelLoadError(
                f"model {self.name!r}: {class_name}.preprocess/postprocess must be plain "
                "functions; do async work in an async predict"
            )
        # An instance attribute shadows Model.predict; Model.bind inspects it after load.
        self.__dict__["predict"] = _chain(pre, predict, post)
        self._user = user
        # The user's class opts in to str inputs as a runtime does (default: the bytes).
        self.text_inputs = bool(getattr(user, "text_inputs", False))
        user_load = getattr(user, "load", None)
        return user_load(self.artifact.parent) if callable(user_load) else None

    async def _finish(self, loading: Awaitable[Any]) -> None:
        try:
            await loading
        except BaseException:
            sys.modules.pop(self._module_name, None)
            raise

    def unload(self) -> Any:
        user = self.__dict__.pop("_user", None)
        self.__dict__.pop("predict", None)
        sys.modules.pop(self._module_name, None)
        user_unload = getattr(user, "unload", None)
        return user_unload() if callable(user_unload) else None


def _module_name(model: str, version: str) -> str:
    # Unique per load, so reloading a version never shares, or unregisters, another's module.
    return re.sub(r"\W", "_", f"inferline_user_{model}_{version}_{next(_LOADS)}")


def _import(name: str, path: Any) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    # Registered, as imports are, so dataclasses and pickle can find the module by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _chain(pre: Stage | None, predict: Stage, post: Stage | None) -> Stage:
    """One callable, sync or async like ``predict``, that runs the three stages."""
    if pre is None and post is None:
        return predict
    before = pre or _identity
    after = post or _identity
    if inspect.iscoroutinefunction(predict):

        async def run_async(inputs: Inputs) -> Outputs:
            result: Outputs = after(await predict(before(inputs)))
            return result

        return run_async

    def run(inputs: Inputs) -> Outputs:
        result: Outputs = after(predict(before(inputs)))
        return result

    return run


def _identity(value: Any) -> Any:
    return value
