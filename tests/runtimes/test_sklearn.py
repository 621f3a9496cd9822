"""SklearnModel: skops with vetted types, pickles only with a pinned SHA-256."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from inferline.errors import ModelLoadError
from inferline.runtimes.base import sha256_of
from inferline.settings import TensorSpec

FEATURES = TensorSpec(name="input", datatype="FP64", shape=[-1, 6])


def _double(x: np.ndarray) -> np.ndarray:
    return 2 * x


class _ProbaExplodes(LogisticRegression):
    """Proves predict_proba is not computed when the signature leaves it out."""

    def predict_proba(self, X):
        raise AssertionError("predict_proba was called")


async def test_skops_classifier_with_vetted_sklearn_types(classification, version_dir, load):
    x, y = classification
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    path = version_dir / "model.skops"
    sio.dump(clf, path)
    # skops does not trust this sklearn type by default: the runtime must vouch for it.
    assert any(t.startswith("sklearn.") for t in sio.get_untrusted_types(file=path))

    model = await load("sklearn")

    assert model.inputs == [FEATURES]
    assert model.outputs == [
        TensorSpec(name="predict", datatype="INT64", shape=[-1]),
        TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, 3]),
    ]
    outputs = await model.infer({"input": x})
    np.testing.assert_array_equal(outputs["predict"], clf.predict(x))
    np.testing.assert_allclose(outputs["predict_proba"], clf.predict_proba(x))


@pytest.mark.parametrize(
    ("estimator", "datatype"),
    [(Ridge(), "FP64"), (KMeans(n_clusters=3, n_init=1, random_state=0), "INT32")],
    ids=["regressor", "clusterer"],
)
async def test_predict_datatype_follows_the_estimator(
    estimator, datatype, classification, version_dir, load
):
    x, y = classification
    estimator.fit(x, y)
    sio.dump(estimator, version_dir / "model.skops")

    model = await load("sklearn")

    assert model.outputs == [TensorSpec(name="predict", datatype=datatype, shape=[-1])]
    outputs = await model.infer({"input": x})
    assert list(outputs) == ["predict"]
    np.testing.assert_array_equal(outputs["predict"], estimator.predict(x))


async def test_string_labels_are_bytes(classification, version_dir, load):
    x, y = classification
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = LogisticRegression(max_iter=1000).fit(x, labels)
    sio.dump(clf, version_dir / "model.skops")

    model = await load("sklearn")

    assert model.outputs[0] == TensorSpec(name="predict", datatype="BYTES", shape=[-1])
    predicted = (await model.infer({"input": x[:20]}))["predict"]
    assert predicted.dtype == object
    assert predicted.tolist() == [label.encode() for label in clf.predict(x[:20])]


async def test_skops_with_an_untrusted_type_is_refused(classification, version_dir, load):
    x, y = classification
    pipeline = make_pipeline(FunctionTransformer(_double), Ridge()).fit(x, y)
    sio.dump(pipeline, version_dir / "model.skops")

    with pytest.raises(ModelLoadError, match=r"not loaded: .*_double"):
        await load("sklearn")


async def test_pickle_without_sha256_is_refused_with_its_hash(classification, version_dir, load):
    x, y = classification
    path = version_dir / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), path)

    with pytest.raises(ModelLoadError, match=f"sha256: {sha256_of(path)}"):
        await load("sklearn")


async def test_pickle_with_a_wrong_sha256_is_refused(classification, version_dir, load):
    x, y = classification
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), version_dir / "model.joblib")

    with pytest.raises(ModelLoadError, match="SHA-256"):
        await load("sklearn", sha256="0" * 64)


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
async def test_pickle_with_its_sha256_loads(suffix, classification, version_dir, load):
    x, y = classification
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    path = version_dir / f"model{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(clf))
    else:
        joblib.dump(clf, path)

    model = await load("sklearn", sha256=sha256_of(path).upper())

    outputs = await model.infer({"input": x})
    np.testing.assert_array_equal(outputs["predict"], clf.predict(x))
    np.testing.assert_allclose(outputs["predict_proba"], clf.predict_proba(x))


async def test_settings_signature_overrides_and_limits_what_is_computed(
    classification, version_dir, load
):
    x, y = classification
    clf = _ProbaExplodes(max_iter=1000).fit(x, y)
    path = version_dir / "model.pkl"
    path.write_bytes(pickle.dumps(clf))
    inputs = [TensorSpec(name="features", datatype="FP64", shape=[-1, 6])]
    outputs = [TensorSpec(name="predict", datatype="INT64", shape=[-1])]

    model = await load("sklearn", sha256=sha256_of(path), inputs=inputs, outputs=outputs)

    assert model.inputs == inputs
    assert model.outputs == outputs
    result = await model.infer({"features": x})
    assert list(result) == ["predict"]
    np.testing.assert_array_equal(result["predict"], clf.predict(x))


async def test_settings_naming_an_unknown_output_are_refused(classification, version_dir, load):
    x, y = classification
    sio.dump(Ridge().fit(x, y), version_dir / "model.skops")
    wrong = [TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, 3])]

    with pytest.raises(ModelLoadError, match="predict_proba"):
        await load("sklearn", outputs=wrong)


async def test_truncated_skops_is_a_load_error(classification, version_dir, load):
    x, y = classification
    path = version_dir / "model.skops"
    sio.dump(LogisticRegression(max_iter=1000).fit(x, y), path)
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("sklearn")


async def test_truncated_pickle_is_a_load_error(classification, version_dir, load):
    x, y = classification
    path = version_dir / "model.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression(max_iter=1000).fit(x, y))[:200])

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("sklearn", sha256=sha256_of(path))


async def test_a_pickle_that_is_not_an_estimator_is_refused(version_dir, load):
    path = version_dir / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))

    with pytest.raises(ModelLoadError, match="dict, which has no predict"):
        await load("sklearn", sha256=sha256_of(path))
