"""``inferline models`` on a local registry: output, exit codes and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferline.cli.main import app
from tests.lifecycle_models import forest_file


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFERLINE_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["models", *args])
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_register_list_show_and_refusals(run, tmp_path: Path) -> None:
    model = forest_file(tmp_path / "a", seed=1)
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"auc": 0.93}')
    out = run(
        "register",
        "fraud",
        str(model),
        "--tag",
        "team=risk",
        "--metrics",
        str(metrics),
        "--alias",
        "production",
    )
    assert "registered fraud version 1 (production)" in out
    assert "fraud" in run("list") and "production→1" in run("list")
    shown = run("show", "fraud", "--version", "production")
    assert '"auc": 0.93' in shown and '"team": "risk"' in shown

    (tmp_path / "model.bin").write_bytes(b"weights")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model.read_bytes()[:300])
    refused = run("register", "fraud", str(broken), code=1)
    assert "failed to load" in refused and "\n" not in refused.strip()  # one line, no native trace
    assert "cannot tell the runtime" in run(
        "register", "fraud", str(tmp_path / "model.bin"), code=1
    )
    assert "does not exist" in run("register", "fraud", str(tmp_path / "missing.onnx"), code=1)
    assert "invalid model name" in run("register", "../up", str(model), code=1)
    assert "pointed at by alias(es) production" in run("delete", "fraud", "1", code=1)
    assert "has no version 9" in run("promote", "fraud", "9", code=1)
    assert "no earlier version" in run("rollback", "fraud", code=1)
    audit = run("audit", "fraud")
    assert "register" in audit and "NO" in audit


def test_remote_errors_are_reported(run) -> None:
    out = run("list", "--server", "http://127.0.0.1:9", code=1)
    assert "cannot reach" in out


def test_register_reference_chooses_its_feature_columns(run, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime
    import pyarrow as pa
    import pyarrow.parquet as pq

    from inferline.cli.demo import N_FEATURES, demo_data
    from inferline.registry.profile import profile_columns
    from inferline.registry.store import Registry
    from inferline.settings import Settings

    model = forest_file(tmp_path / "a", seed=1)
    x, y = demo_data(300)
    x = x.astype(np.float32)
    names = [f"f{i}" for i in range(N_FEATURES)]
    columns = {"id": np.arange(300), **{n: x[:, i] for i, n in enumerate(names)}, "label": y}
    data = tmp_path / "train.parquet"
    pq.write_table(pa.table(columns), data)

    # Every column would be a feature: an id and the label too many for a [-1, 20] input.
    refused = run("register", "fraud", str(model), "--reference", str(data), code=1)
    assert "reference data has 22 columns; input 'input' takes 20" in refused
    assert "--features" in refused and "--exclude" in refused
    unknown = run(
        "register", "fraud", str(model), "--reference", str(data), "--exclude", "nope", code=1
    )
    assert "train.parquet has no column(s) nope; its columns: id, f0, f1" in unknown
    both = ["--features", "f0", "--exclude", "id"]
    assert "not both" in run(
        "register", "fraud", str(model), "--reference", str(data), *both, code=1
    )
    assert "needs reference data" in run("register", "fraud", str(model), "--exclude", "id", code=2)

    run("register", "fraud", str(model), "--reference", str(data), "--exclude", "id,label")
    run("register", "fraud", str(model), "--reference", str(data), "--features", ",".join(names))
    settings = Settings()
    registry = Registry(settings.registry_database, settings.artifact_root)
    try:
        profiles = [registry.get("fraud", v).profile for v in (1, 2)]
    finally:
        registry.close()
    label, probabilities = onnxruntime.InferenceSession(
        str(model), providers=["CPUExecutionProvider"]
    ).run(None, {"input": x})
    assert profiles[0] == profiles[1]
    profile = profiles[0]
    assert profile["rows"] == 300
    assert profile["features"] == profile_columns({n: x[:, i] for i, n in enumerate(names)})
    # Predictions: the model run here (onnxruntime's threads may round the last bit apart).
    predicted = profile_columns(
        {"label": label, **{f"probabilities_{i}": probabilities[:, i] for i in range(2)}}
    )
    assert profile["predictions"]["label"] == predicted["label"]
    for name in ("probabilities_0", "probabilities_1"):
        got, want = profile["predictions"][name], predicted[name]
        assert got["count"] == want["count"]
        assert np.allclose(got["edges"], want["edges"], atol=1e-6)
        assert np.isclose(got["mean"], want["mean"], atol=1e-6)
