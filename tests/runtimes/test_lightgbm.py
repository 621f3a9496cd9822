"""LightGBMModel: text model files, predictions equal LightGBM's own."""

from __future__ import annotations

import lightgbm
import numpy as np
import pytest

from inferline.errors import ModelLoadError
from inferline.settings import TensorSpec


def _train(x: np.ndarray, y: np.ndarray, **params) -> lightgbm.Booster:
    params = {"verbose": -1, "num_threads": 1, "num_leaves": 7, **params}
    return lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=5)


async def test_multiclass_probabilities(classification, version_dir, load):
    x, y = classification
    booster = _train(x, y, objective="multiclass", num_class=3)
    booster.save_model(version_dir / "model.txt")

    model = await load("lightgbm")

    assert model.inputs == [TensorSpec(name="input", datatype="FP64", shape=[-1, 6])]
    assert model.outputs == [TensorSpec(name="predict", datatype="FP64", shape=[-1, 3])]
    outputs = await model.infer({"input": x})
    assert outputs["predict"].dtype == np.float64
    np.testing.assert_allclose(outputs["predict"], booster.predict(x))


async def test_binary_classifier(classification, version_dir, load):
    x, y = classification
    booster = _train(x, (y == 0).astype(np.int64), objective="binary")
    booster.save_model(version_dir / "model.txt")

    model = await load("lightgbm", parameters={"num_threads": 2})

    assert model.outputs == [TensorSpec(name="predict", datatype="FP64", shape=[-1])]
    outputs = await model.infer({"input": x})
    np.testing.assert_allclose(outputs["predict"], booster.predict(x))
    assert model._num_threads == 2


async def test_settings_signature_overrides_the_booster(classification, version_dir, load):
    x, y = classification
    booster = _train(x, y, objective="multiclass", num_class=3)
    booster.save_model(version_dir / "model.txt")
    inputs = [TensorSpec(name="features", datatype="FP64", shape=[-1, 6], min=-5.0, max=5.0)]
    outputs = [TensorSpec(name="predict", datatype="FP64", shape=[-1, 3])]

    model = await load("lightgbm", inputs=inputs, outputs=outputs)

    assert model.inputs == inputs
    assert model.outputs == outputs
    result = await model.infer({"features": x})
    np.testing.assert_allclose(result["predict"], booster.predict(x))


async def test_settings_declaring_two_inputs_are_refused(classification, version_dir, load):
    x, y = classification
    _train(x, y, objective="multiclass", num_class=3).save_model(version_dir / "model.txt")
    two = [
        TensorSpec(name="a", datatype="FP64", shape=[-1, 3]),
        TensorSpec(name="b", datatype="FP64", shape=[-1, 3]),
    ]

    with pytest.raises(ModelLoadError, match="takes one input"):
        await load("lightgbm", inputs=two)


async def test_truncated_file_is_a_load_error(classification, version_dir, load):
    x, y = classification
    path = version_dir / "model.txt"
    _train(x, y, objective="multiclass", num_class=3).save_model(path)
    path.write_text(path.read_text()[:300])

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("lightgbm")
