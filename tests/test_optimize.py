"""``inferline optimize``: conversions keep answers and signatures; changed answers are refused.

The end-to-end cases (a forest converted, a network quantized or refused) run on
SQLite and PostgreSQL through ``registry_url``; the per-converter cases only
exercise converters, which no database changes, so they run on SQLite alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inferline import lifecycle
from inferline.cli.main import app
from inferline.errors import ConversionRefused
from inferline.optimize import optimize
from inferline.optimize.check import reference
from inferline.registry.records import ModelVersion
from inferline.registry.store import Registry

N_FEATURES = 6


def table(rows: int = 600, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    return make_classification(
        n_samples=rows,
        n_features=N_FEATURES,
        n_informative=4,
        n_classes=classes,
        random_state=seed,
    )


def fresh_rows(seed: int = 99) -> np.ndarray:
    """Rows no model was trained or checked on."""
    return table(200, seed=seed)[0]


def skops_file(folder: Path, estimator: object, name: str = "model.skops") -> Path:
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sio.dump(estimator, path)
    return path


def forest_file(folder: Path) -> Path:
    from sklearn.ensemble import RandomForestClassifier

    features, labels = table()
    forest = RandomForestClassifier(n_estimators=12, max_depth=6, random_state=0)
    return skops_file(folder, forest.fit(features, labels), "forest.skops")


def network_file(folder: Path) -> Path:
    """A small float32 ONNX neural network (an sklearn MLP through skl2onnx)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    features, labels = table()
    with warnings.catch_warnings():
        # How well it fits does not matter here; only that its weights are real.
        warnings.simplefilter("ignore", ConvergenceWarning)
        network = MLPRegressor(hidden_layer_sizes=(32, 32), max_iter=50, random_state=0)
        network.fit(features, labels)
    graph = to_onnx(
        network,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "network.onnx"
    path.write_bytes(graph.SerializeToString())
    return path


def features_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.csv"
    header = ",".join(f"f{i}" for i in range(N_FEATURES))
    np.savetxt(path, table()[0], delimiter=",", header=header, comments="")
    return path


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(registry_url, tmp_path / "artifacts")
    yield registry
    registry.close()


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts")
    yield registry
    registry.close()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def answers(
    registry: Registry, record: ModelVersion, executor, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """What a registered version answers, loaded the way the server loads it."""
    model = await lifecycle.load_version(registry, record, executor)
    try:
        datatype = record.signature["inputs"][0]["datatype"]
        feed = {"input": rows.astype(np.float32 if datatype == "FP32" else np.float64)}
        return {k: np.asarray(v) for k, v in (await model.infer(feed)).items()}
    finally:
        await model.release(executor)


async def test_forest_becomes_an_onnx_version_that_answers_alike(
    registry: Registry, executor, tmp_path: Path
) -> None:
    data = features_csv(tmp_path)
    source = await lifecycle.register(
        registry,
        "fraud",
        forest_file(tmp_path / "v1"),
        executor,
        tags={"team": "risk"},
        reference=data,
        alias="production",
    )
    report = await optimize(registry, "fraud", executor, calls=3)

    new = report.registered
    assert new is not None and new.version == 2 and new.runtime == "onnx"
    assert new.tags == {"team": "risk", "optimized_from": "1", "optimization": "onnx"}
    assert new.signature == source.signature  # clients send and read the same tensors
    assert new.signature["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 6]}]
    assert report.signature_kept and "reference profile" in report.reference
    assert report.warning is None
    assert registry.aliases("fraud") == {"production": 1}  # no alias moved unasked
    # Without --data the new version keeps the source's profile: drift and skew
    # monitoring carry over when it is promoted.
    assert source.profile is not None and new.profile == source.profile

    rows = fresh_rows()
    before = await answers(registry, source, executor, rows)
    after = await answers(registry, new, executor, rows)
    np.testing.assert_allclose(after["predict_proba"], before["predict_proba"], atol=1e-4)
    top = np.sort(before["predict_proba"], axis=1)
    tie = top[:, -1] - top[:, -2] <= 2e-4  # either label is right on a tie
    assert np.array_equal(after["predict"][~tie], before["predict"][~tie])
    entry = next(e for e in registry.audit("fraud") if e.action == "optimize")
    assert entry.ok and entry.version == 2

    # Rows drawn from the stored profile stay inside the training range.
    model = await lifecycle.load_version(registry, source, executor)
    try:
        drawn = reference(model, source, None).inputs["input"]
    finally:
        await model.release(executor)
    train = table()[0]
    assert drawn.shape == (1000, N_FEATURES)
    assert np.all(drawn >= train.min(axis=0)) and np.all(drawn <= train.max(axis=0))


async def test_a_conversion_that_changes_outputs_is_refused(
    registry: Registry, executor, tmp_path: Path
) -> None:
    source = await lifecycle.register(registry, "net", network_file(tmp_path), executor)
    with pytest.raises(ConversionRefused) as refused:
        await optimize(registry, "net", executor, quantize=True, tolerance=1e-9, calls=3)
    message = refused.value.message
    assert "output 'variable' differs by up to" in message and "nothing registered" in message
    assert [v.version for v in registry.versions("net")] == [1]
    entry = registry.audit("net")[0]
    assert entry.action == "optimize" and not entry.ok and "differs by up to" in entry.detail

    # The default int8 tolerance accepts the same quantization; --data also profiles it.
    data = features_csv(tmp_path)
    report = await optimize(registry, "net", executor, quantize=True, data=data, calls=3)
    new = report.registered
    assert new is not None and new.tags["optimization"] == "onnx-int8"
    assert report.reference == "600 rows of train.csv" and new.profile is not None
    assert new.signature == source.signature and new.size < source.size
    rows = fresh_rows()
    before = await answers(registry, source, executor, rows)
    after = await answers(registry, new, executor, rows)
    assert not np.array_equal(after["variable"], before["variable"])  # int8 really ran
    np.testing.assert_allclose(after["variable"], before["variable"], atol=5e-2, rtol=5e-2)


def _gradient_boosting() -> object:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=10, random_state=0)


def _ridge() -> object:
    from sklearn.linear_model import Ridge

    return Ridge()


def _logistic() -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


@pytest.mark.parametrize("make", [_gradient_boosting, _ridge, _logistic])
async def test_sklearn_estimators_convert(sqlite_registry, executor, tmp_path: Path, make) -> None:
    """Float32-only converters (boosting) and float64 ones (linear) keep the FP64 signature."""
    features, labels = table()
    estimator = make()
    estimator.fit(features, labels)  # type: ignore[attr-defined]
    path = skops_file(tmp_path, estimator)
    source = await lifecycle.register(sqlite_registry, "m", path, executor)
    report = await optimize(sqlite_registry, "m", executor, calls=2)
    assert report.registered is not None and report.registered.signature == source.signature
    assert report.warning is not None and "random normal rows" in report.reference
    await _same_answers(sqlite_registry, source, report.registered, executor)


def _xgboost(folder: Path, objective: str) -> Path:
    import xgboost

    classes = 3 if objective.startswith("multi") else 2
    features, labels = table(classes=classes)
    params = {"objective": objective, "max_depth": 3}
    if classes > 2:
        params["num_class"] = classes
    booster = xgboost.train(params, xgboost.DMatrix(features, label=labels), num_boost_round=8)
    path = folder / "model.json"
    booster.save_model(str(path))
    return path


def _lightgbm(folder: Path, objective: str) -> Path:
    import lightgbm

    classes = 3 if objective == "multiclass" else 2
    features, labels = table(classes=classes)
    params = {"objective": objective, "num_leaves": 8, "verbose": -1}
    if classes > 2:
        params["num_class"] = classes
    booster = lightgbm.train(params, lightgbm.Dataset(features, label=labels), num_boost_round=8)
    path = folder / "model.txt"
    booster.save_model(str(path))
    return path


@pytest.mark.parametrize(
    ("write", "objective"),
    [
        (_xgboost, "binary:logistic"),
        (_xgboost, "multi:softprob"),
        (_xgboost, "multi:softmax"),
        (_xgboost, "reg:squarederror"),
        (_lightgbm, "binary"),
        (_lightgbm, "multiclass"),
        (_lightgbm, "regression"),
    ],
)
async def test_boosters_convert(
    sqlite_registry, executor, tmp_path: Path, write, objective
) -> None:
    source = await lifecycle.register(sqlite_registry, "b", write(tmp_path, objective), executor)
    report = await optimize(sqlite_registry, "b", executor, calls=2)
    new = report.registered
    assert new is not None and new.runtime == "onnx" and new.tags["optimized_from"] == "1"
    assert new.signature == source.signature
    await _same_answers(sqlite_registry, source, new, executor)


async def _same_answers(registry, source, new, executor) -> None:
    rows = fresh_rows()
    before = await answers(registry, source, executor, rows)
    after = await answers(registry, new, executor, rows)
    for name, values in before.items():
        if values.dtype.kind == "f":
            np.testing.assert_allclose(after[name], values, rtol=1e-4, atol=1e-4)
        else:
            assert np.array_equal(after[name], values), name


async def test_quantizing_trees_and_reconverting_onnx_are_refused(
    sqlite_registry, executor, tmp_path: Path
) -> None:
    await lifecycle.register(sqlite_registry, "fraud", forest_file(tmp_path), executor)
    with pytest.raises(ConversionRefused, match=r"tree ensemble.*no int8 form"):
        await optimize(sqlite_registry, "fraud", executor, quantize=True, calls=2)
    await optimize(sqlite_registry, "fraud", executor, calls=2)
    with pytest.raises(ConversionRefused, match="version 2 is ONNX already"):
        await optimize(sqlite_registry, "fraud", executor, version=2)
    assert [v.version for v in sqlite_registry.versions("fraud")] == [1, 2]


async def test_models_served_as_named_columns_are_refused(
    sqlite_registry, executor, tmp_path: Path
) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    features, labels = table()
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(N_FEATURES)])
    path = skops_file(tmp_path, LogisticRegression().fit(frame, labels))
    await lifecycle.register(sqlite_registry, "cols", path, executor)
    with pytest.raises(ConversionRefused, match=r"one 2-D input \[-1, n_features\]"):
        await optimize(sqlite_registry, "cols", executor, calls=2)
    assert [v.version for v in sqlite_registry.versions("cols")] == [1]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFERLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "120")
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_cli_prints_before_and_after_and_dry_run_registers_nothing(run, tmp_path: Path) -> None:
    run("models", "register", "fraud", str(forest_file(tmp_path)))
    data = features_csv(tmp_path)
    out = run("optimize", "fraud", "--dry-run", "--data", str(data))
    assert "fraud version 1 (sklearn) → onnx" in out and "600 rows of train.csv" in out
    for row in ("latency, 1 row (median)", "throughput, batches of 64", "size", "predict_proba"):
        assert row in out
    assert "dry run: nothing registered" in out
    assert "onnx" not in run("models", "show", "fraud")  # still the one sklearn version

    refused = run("optimize", "fraud", "--tolerance", "0", code=1)
    assert "differs by up to" in refused and "\n" not in refused.strip()  # one line

    out = run("optimize", "fraud", "--alias", "staging")
    assert "registered fraud version 2 (staging) (onnx), tagged optimized_from=1" in out
    assert "warning: version 1 has no reference profile" in out  # and no --data
    assert "onnx" in run("models", "show", "fraud")


def _avx2_matmul_integer(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``MatMulInteger`` as x86 CPUs without VNNI compute it: VPMADDUBSW adds each pair
    of u8 x s8 products in a saturating int16 before the int32 sum (VPMADDWD)."""
    a = activations.astype(np.int32)
    w = weights.astype(np.int32)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * w[None, 0::2, :] + a[:, 1::2, None] * w[None, 1::2, :]
    return np.clip(pairs, -(1 << 15), (1 << 15) - 1).sum(axis=1)


def test_int8_weights_cannot_saturate_cpus_without_vnni(tmp_path: Path) -> None:
    """The quantized network gives the same integer products on every x86-64 CPU.

    Without ``reduce_range`` the weights span [-127, 127]: two products of a u8
    activation and such a weight overflow an int16 (a 0.47 difference on an AVX2-only
    EPYC). The emulation below is that CPU's arithmetic, so this holds on any host.
    """
    import onnx
    from onnx import numpy_helper

    from inferline.optimize.convert import quantize

    quantized = quantize(onnx.load(str(network_file(tmp_path))))
    weights = [
        numpy_helper.to_array(init)
        for init in quantized.graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2
    ]
    assert weights, "no int8 weight matrix in the quantized graph"
    worst = np.full((1, max(w.shape[0] for w in weights)), 255, dtype=np.uint8)
    rng = np.random.default_rng(0)
    for matrix in weights:
        for activations in (
            worst[:, : matrix.shape[0]],
            rng.integers(0, 256, (64, matrix.shape[0])),
        ):
            exact = activations.astype(np.int64) @ matrix.astype(np.int64)
            np.testing.assert_array_equal(_avx2_matmul_integer(activations, matrix), exact)


def test_cli_optimize_data_chooses_its_feature_columns(run, tmp_path: Path) -> None:
    from inferline.registry.profile import profile_columns
    from inferline.settings import Settings

    run("models", "register", "fraud", str(forest_file(tmp_path)))
    x, y = table()
    names = [f"f{i}" for i in range(N_FEATURES)]
    data = tmp_path / "labelled.csv"
    rows = np.column_stack([np.arange(len(y)), x, y])
    np.savetxt(data, rows, delimiter=",", header=",".join(["id", *names, "y"]), comments="")
    # All eight columns would be features of a six-feature model.
    assert "reference data has 8 columns" in run("optimize", "fraud", "--data", str(data), code=1)
    out = run("optimize", "fraud", "--data", str(data), "--exclude", "id,y")
    assert "600 rows of labelled.csv" in out and "registered fraud version 2" in out
    settings = Settings()
    registry = Registry(settings.registry_database, settings.artifact_root)
    try:
        profile = registry.get("fraud", 2).profile
    finally:
        registry.close()
    assert profile is not None and list(profile["features"]) == names
    read_back = np.loadtxt(data, delimiter=",", skiprows=1)[:, 1:-1]
    assert profile["features"] == profile_columns({n: read_back[:, i] for i, n in enumerate(names)})
