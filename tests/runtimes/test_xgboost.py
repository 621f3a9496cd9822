"""XGBoostModel: boosters in each file format, predictions equal XGBoost's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost

from inferline.errors import ModelLoadError
from inferline.settings import TensorSpec


def _train(x: np.ndarray, y: np.ndarray, **params) -> xgboost.Booster:
    data = xgboost.DMatrix(x, label=y)
    return xgboost.train({"nthread": 1, "max_depth": 3, **params}, data, num_boost_round=5)


async def test_multiclass_probabilities(classification, version_dir, load):
    x, y = classification
    booster = _train(x, y, objective="multi:softprob", num_class=3)
    booster.save_model(version_dir / "model.json")

    model = await load("xgboost")

    assert model.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 6])]
    assert model.outputs == [TensorSpec(name="predict", datatype="FP32", shape=[-1, 3])]
    x32 = x.astype(np.float32)
    outputs = await model.infer({"input": x32})
    expected = booster.predict(xgboost.DMatrix(x32))
    assert outputs["predict"].dtype == np.float32
    np.testing.assert_allclose(outputs["predict"], expected, rtol=1e-6)


# XGBoost 3 writes UBJSON whatever the suffix; .bst and .model are the names older
# releases used, so the UBJSON bytes are saved under them (saving there directly warns).
@pytest.mark.parametrize("suffix", [".json", ".ubj", ".bst", ".model"])
async def test_binary_classifier_in_each_format(suffix, classification, version_dir, load):
    x, y = classification
    booster = _train(x, (y == 0).astype(np.int64), objective="binary:logistic")
    saved = version_dir / ("model.json" if suffix == ".json" else "model.ubj")
    booster.save_model(saved)
    saved.rename(saved.with_suffix(suffix))

    model = await load("xgboost", parameters={"nthread": 2})

    assert model.outputs == [TensorSpec(name="predict", datatype="FP32", shape=[-1])]
    x32 = x.astype(np.float32)
    outputs = await model.infer({"input": x32})
    np.testing.assert_allclose(outputs["predict"], booster.predict(xgboost.DMatrix(x32)), rtol=1e-6)
    config = json.loads(model._booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "2"


async def test_settings_signature_overrides_the_booster(classification, version_dir, load):
    x, y = classification
    booster = _train(x, y, objective="multi:softprob", num_class=3)
    booster.save_model(version_dir / "model.ubj")
    inputs = [TensorSpec(name="features", datatype="FP64", shape=[-1, 6])]
    outputs = [TensorSpec(name="predict", datatype="FP32", shape=[-1, 3], min=0.0, max=1.0)]

    model = await load("xgboost", inputs=inputs, outputs=outputs)

    assert model.inputs == inputs
    assert model.outputs == outputs
    result = await model.infer({"features": x})
    np.testing.assert_allclose(result["predict"], booster.inplace_predict(x), rtol=1e-6)


async def test_settings_naming_an_unknown_output_are_refused(classification, version_dir, load):
    x, y = classification
    _train(x, y, objective="multi:softprob", num_class=3).save_model(version_dir / "model.json")

    with pytest.raises(ModelLoadError, match="probabilities"):
        await load(
            "xgboost", outputs=[{"name": "probabilities", "datatype": "FP32", "shape": [-1]}]
        )


async def test_truncated_json_is_a_load_error(classification, version_dir, load):
    x, y = classification
    path = version_dir / "model.json"
    _train(x, y, objective="multi:softprob", num_class=3).save_model(path)
    path.write_text(path.read_text()[:100] + "}")  # ends like a whole file; the parser objects

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("xgboost")


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
async def test_truncated_file_is_refused_before_xgboost_reads_it(
    suffix, classification, version_dir, load
):
    # Handing XGBoost a truncated UBJSON file hung this test and allocated gigabytes.
    x, y = classification
    path = version_dir / f"model{suffix}"
    _train(x, y, objective="multi:softprob", num_class=3).save_model(path)
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ModelLoadError, match="truncated"):
        await load("xgboost")
