"""SklearnModel's forest shortcut: labels taken from the one predict_proba pass.

When a random forest or extra-trees classifier serves both ``predict`` and
``predict_proba``, the runtime derives the labels from the probabilities instead
of running the trees twice. These tests hold the served labels to
``estimator.predict(X)`` on many rows (ties included), check the shortcut is
taken, and check it is not taken where argmax would be wrong.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.model_selection import FixedThresholdClassifier

from inferline.runtimes.base import sha256_of
from inferline.settings import TensorSpec

FORESTS = [RandomForestClassifier, ExtraTreesClassifier]

LABELS = {
    "int-binary": np.array([0, 1]),
    "int-multiclass": np.array([0, 1, 2]),
    "int-non-contiguous": np.array([3, 7, 10]),
    "int-negative-unsorted": np.array([5, -4, 0, 2]),
    "float": np.array([2.0, -1.0, 10.0]),  # whole numbers: sklearn calls others continuous
    "bool": np.array([True, False]),
    "str-binary": np.array(["no", "yes"]),
    "str-multiclass": np.array(["eel", "cat", "dog"]),
    "str-object": np.array(["b", "a", "c"], dtype=object),
}


def training_set(n_classes: int, rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6 FP64 features; the class index depends on the first ``n_classes`` of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    noisy = x[:, :n_classes] + 0.5 * rng.normal(size=(rows, n_classes))
    return x, np.argmax(noisy, axis=1)


def serving_rows(rows: int = 3000, seed: int = 1) -> np.ndarray:
    """In and far out of the training distribution, where the trees disagree most."""
    return np.random.default_rng(seed).normal(scale=2.0, size=(rows, 6))


def served_labels(outputs: dict[str, np.ndarray]) -> list[object]:
    return list(outputs["predict"].tolist())


def expected_labels(estimator, x: np.ndarray) -> list[object]:
    """``estimator.predict(x)`` as the runtime serves it: strings as UTF-8 bytes."""
    labels = estimator.predict(x)
    if labels.dtype.kind in "OUS":
        return [str(label).encode() for label in labels]
    return list(labels.tolist())


def tied_rows(proba: np.ndarray) -> int:
    return int(((proba == proba.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())


@pytest.fixture
def trees_run_once(monkeypatch):
    """After load, make ``predict`` on the forest classes fail: the shortcut never calls it."""

    def refuse() -> None:
        def predict(self, X):
            raise AssertionError("predict ran: the labels should come from predict_proba")

        for cls in FORESTS:
            monkeypatch.setattr(cls, "predict", predict)

    return refuse


@pytest.mark.parametrize("kind", list(LABELS))
@pytest.mark.parametrize("forest", FORESTS, ids=lambda cls: cls.__name__)
async def test_forest_labels_from_proba_equal_predict(
    forest, kind, version_dir, load, trees_run_once
):
    classes = LABELS[kind]
    x, y = training_set(len(classes))
    clf = forest(n_estimators=15, random_state=0).fit(x, classes[y])
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows()
    want_labels, want_proba = expected_labels(clf, rows), clf.predict_proba(rows)
    want_dtype = clf.predict(rows).dtype

    model = await load("sklearn")
    assert [spec.name for spec in model.outputs] == ["predict", "predict_proba"]
    trees_run_once()
    outputs = await model.infer({"input": rows})

    assert served_labels(outputs) == want_labels
    if want_dtype.kind not in "OUS":
        assert outputs["predict"].dtype == want_dtype
    np.testing.assert_array_equal(outputs["predict_proba"], want_proba)


@pytest.mark.parametrize("kind", ["int-non-contiguous", "str-multiclass", "int-binary"])
@pytest.mark.parametrize("forest", FORESTS, ids=lambda cls: cls.__name__)
async def test_ties_break_as_predict_does(forest, kind, version_dir, load):
    """Two unpruned trees vote 1/2 each wherever they disagree: argmax ties on many rows."""
    classes = LABELS[kind]
    x, y = training_set(len(classes))
    clf = forest(n_estimators=2, random_state=0).fit(x, classes[y])
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows()
    proba = clf.predict_proba(rows)
    assert tied_rows(proba) > 100, "the data set no longer makes ties; the test proves nothing"

    model = await load("sklearn")
    outputs = await model.infer({"input": rows})

    assert served_labels(outputs) == expected_labels(clf, rows)
    np.testing.assert_array_equal(outputs["predict_proba"], proba)


async def test_forest_fitted_on_a_dataframe(version_dir, load, trees_run_once):
    pd = pytest.importorskip("pandas")
    x, y = training_set(3)
    names = [f"f{i}" for i in range(6)]
    clf = RandomForestClassifier(n_estimators=10, random_state=0)
    clf.fit(pd.DataFrame(x, columns=names), LABELS["int-non-contiguous"][y])
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows(500)
    frame = pd.DataFrame(rows, columns=names)
    want = expected_labels(clf, frame)

    model = await load("sklearn")
    trees_run_once()
    outputs = await model.infer({name: rows[:, i] for i, name in enumerate(names)})

    assert served_labels(outputs) == want


class _PlainSubclass(RandomForestClassifier):  # type: ignore[misc]
    """Inherits predict and predict_proba: the shortcut still holds."""


class _CautiousForest(RandomForestClassifier):  # type: ignore[misc]
    """Predicts the last class whenever it gets a quarter of the votes: not argmax."""

    def predict(self, X):
        proba = self.predict_proba(X)
        argmax = self.classes_.take(np.argmax(proba, axis=1))
        return np.where(proba[:, -1] >= 0.25, self.classes_[-1], argmax)


class _ReweightedForest(RandomForestClassifier):  # type: ignore[misc]
    """Overrides predict_proba; the inherited predict then follows the override."""

    def predict_proba(self, X):
        proba = super().predict_proba(X) * np.array([1.0, 1.0, 3.0])
        return proba / proba.sum(axis=1, keepdims=True)


def pickled(estimator, version_dir) -> str:
    path = version_dir / "model.pkl"
    path.write_bytes(pickle.dumps(estimator))
    return sha256_of(path)


@pytest.mark.parametrize("cls", [_PlainSubclass, _CautiousForest, _ReweightedForest])
async def test_subclasses_serve_their_own_predict(cls, version_dir, load):
    classes = LABELS["int-non-contiguous"]
    x, y = training_set(3)
    clf = cls(n_estimators=15, random_state=0).fit(x, classes[y])
    sha256 = pickled(clf, version_dir)
    rows = serving_rows()
    if cls is _CautiousForest:
        argmax = clf.classes_.take(np.argmax(clf.predict_proba(rows), axis=1))
        assert (clf.predict(rows) != argmax).sum() > 100, "predict no longer differs from argmax"

    model = await load("sklearn", sha256=sha256)
    outputs = await model.infer({"input": rows})

    assert served_labels(outputs) == expected_labels(clf, rows)
    np.testing.assert_array_equal(outputs["predict_proba"], clf.predict_proba(rows))


async def test_threshold_wrapped_forest_is_not_argmax(version_dir, load):
    """FixedThresholdClassifier keeps predict_proba but moves the decision threshold."""
    classes = LABELS["str-binary"]
    x, y = training_set(2)
    forest = RandomForestClassifier(n_estimators=15, random_state=0)
    clf = FixedThresholdClassifier(forest, threshold=0.8).fit(x, classes[y])
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows()
    argmax = clf.classes_.take(np.argmax(clf.predict_proba(rows), axis=1))
    assert (clf.predict(rows) != argmax).sum() > 100, "predict no longer differs from argmax"

    model = await load("sklearn")
    outputs = await model.infer({"input": rows})

    assert served_labels(outputs) == expected_labels(clf, rows)


async def test_multi_output_forest_serves_predict(version_dir, load):
    """Two targets: predict_proba is a list (not served), predict is 2-D."""
    x, y = training_set(3)
    targets = np.column_stack([LABELS["int-non-contiguous"][y], y % 2])
    clf = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, targets)
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows(500)

    model = await load("sklearn")
    assert model.outputs == [TensorSpec(name="predict", datatype="INT64", shape=[-1, 2])]
    outputs = await model.infer({"input": rows})

    assert list(outputs) == ["predict"]
    np.testing.assert_array_equal(outputs["predict"], clf.predict(rows))


@pytest.mark.parametrize("wanted", ["predict", "predict_proba"])
async def test_one_declared_output_is_all_that_is_computed(wanted, version_dir, load):
    classes = LABELS["str-multiclass"]
    x, y = training_set(3)
    clf = ExtraTreesClassifier(n_estimators=10, random_state=0).fit(x, classes[y])
    sio.dump(clf, version_dir / "model.skops")
    rows = serving_rows(500)
    spec = {
        "predict": TensorSpec(name="predict", datatype="BYTES", shape=[-1]),
        "predict_proba": TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, 3]),
    }[wanted]

    model = await load("sklearn", outputs=[spec])
    outputs = await model.infer({"input": rows})

    assert list(outputs) == [wanted]
    if wanted == "predict":
        assert served_labels(outputs) == expected_labels(clf, rows)
    else:
        np.testing.assert_array_equal(outputs["predict_proba"], clf.predict_proba(rows))
