"""PythonModel: user classes, sync or async, chosen once at load."""

from __future__ import annotations

import inspect
import sys
import textwrap
import threading

import numpy as np
import pytest

from inferline.errors import ModelLoadError
from inferline.runtimes.loader import load_model
from inferline.settings import ModelSettings, TensorSpec

SIGNATURE = {
    "inputs": [TensorSpec(name="x", datatype="FP64", shape=[-1, 2])],
    "outputs": [TensorSpec(name="y", datatype="FP64", shape=[-1, 2])],
}

SYNC_MODEL = """
import threading

class Model:
    def load(self, path):
        self.scale = float((path / "scale.txt").read_text())

    def preprocess(self, inputs):
        return {"x": inputs["x"] + 1}

    def predict(self, inputs):
        self.thread = threading.get_ident()
        return {"y": inputs["x"] * self.scale}

    def postprocess(self, outputs):
        return {"y": outputs["y"] - 1}
"""

ASYNC_MODEL = """
import asyncio
import threading

class Scaler:
    async def load(self, path):
        await asyncio.sleep(0)
        self.scale = 3.0

    async def predict(self, inputs):
        self.thread = threading.get_ident()
        await asyncio.sleep(0)
        return {"y": inputs["x"] * self.scale}
"""


def _write(version_dir, code: str) -> None:
    (version_dir / "model.py").write_text(textwrap.dedent(code))


async def test_sync_class_runs_its_stages_in_the_executor(version_dir, load):
    _write(version_dir, SYNC_MODEL)
    (version_dir / "scale.txt").write_text("10")

    # "thread", not "auto": a predict this small would otherwise be timed and run inline.
    model = await load("python", executor="thread", **SIGNATURE)

    assert not inspect.iscoroutinefunction(model.predict)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    outputs = await model.infer({"x": x})
    np.testing.assert_array_equal(outputs["y"], (x + 1) * 10 - 1)
    assert model._user.thread != threading.get_ident()  # not on the event loop's thread


async def test_async_class_is_awaited_on_the_loop(version_dir, load):
    _write(version_dir, ASYNC_MODEL)

    model = await load("python", parameters={"class": "Scaler"}, **SIGNATURE)

    assert inspect.iscoroutinefunction(model.predict)
    x = np.array([[1.0, 2.0]])
    outputs = await model.infer({"x": x})
    np.testing.assert_array_equal(outputs["y"], x * 3)  # the async load ran first
    assert model._user.thread == threading.get_ident()  # no executor hop


async def test_two_versions_do_not_share_a_module(tmp_path, executor):
    settings = ModelSettings(name="m", runtime="python", **SIGNATURE)
    models = []
    for version, factor in (("1", 2), ("2", 5)):
        folder = tmp_path / "m" / version
        folder.mkdir(parents=True)
        _write(
            folder,
            f"FACTOR = {factor}\nclass Model:\n    def predict(self, inputs):\n"
            '        return {"y": inputs["x"] * FACTOR}\n',
        )
        models.append(await load_model(settings, version, folder, executor))

    x = np.ones((1, 2))
    first, second = [(await model.infer({"x": x}))["y"] for model in models]
    np.testing.assert_array_equal(first, x * 2)
    np.testing.assert_array_equal(second, x * 5)


async def test_unload_forgets_the_module_and_calls_the_user(version_dir, load, executor):
    _write(
        version_dir,
        """
        class Model:
            unloaded = []
            def predict(self, inputs):
                return {"y": inputs["x"]}
            def unload(self):
                Model.unloaded.append(True)
    """,
    )
    model = await load("python", **SIGNATURE)
    module_name = model._module_name
    user_class = type(model._user)
    assert module_name in sys.modules

    await model.release(executor)

    assert module_name not in sys.modules
    assert user_class.unloaded == [True]


async def test_without_a_declared_signature_the_load_fails(version_dir, load):
    _write(version_dir, SYNC_MODEL)
    (version_dir / "scale.txt").write_text("1")

    with pytest.raises(ModelLoadError, match="declare 'inputs'"):
        await load("python")


async def test_a_missing_class_is_named_with_the_classes_found(version_dir, load):
    _write(version_dir, ASYNC_MODEL)

    with pytest.raises(ModelLoadError, match=r"no class 'Model'.*classes found: Scaler"):
        await load("python", **SIGNATURE)


async def test_async_preprocess_is_refused(version_dir, load):
    _write(
        version_dir,
        """
        class Model:
            async def preprocess(self, inputs):
                return inputs
            def predict(self, inputs):
                return {"y": inputs["x"]}
    """,
    )

    with pytest.raises(ModelLoadError, match="must be plain functions"):
        await load("python", **SIGNATURE)


BROKEN = {
    "syntax": ("class Model:\n    def predict(self, inputs)\n", "SyntaxError"),
    "sync-load": (
        "class Model:\n"
        "    def load(self, path):\n"
        "        raise FileNotFoundError('no weights here')\n"
        "    def predict(self, inputs):\n"
        "        return inputs\n",
        "no weights here",
    ),
    "async-load": (
        "class Model:\n"
        "    async def load(self, path):\n"
        "        raise FileNotFoundError('no weights here')\n"
        "    def predict(self, inputs):\n"
        "        return inputs\n",
        "no weights here",
    ),
}


@pytest.mark.parametrize(("code", "message"), BROKEN.values(), ids=BROKEN.keys())
async def test_a_failed_load_is_a_load_error_and_leaves_no_module(code, message, version_dir, load):
    _write(version_dir, code)
    before = set(sys.modules)

    with pytest.raises(ModelLoadError, match=message):
        await load("python", **SIGNATURE)
    assert set(sys.modules) == before
