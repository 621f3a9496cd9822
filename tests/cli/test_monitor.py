"""``inferline monitor profile``: a model folder gets the profile registration would store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from inferline.cli.demo import N_FEATURES, demo_data, write_demo_model
from inferline.cli.main import app
from inferline.monitoring.monitor import Monitor, folder_profiles
from inferline.monitoring.records import InferenceRecord
from inferline.registry.profile import profile_columns
from inferline.settings import DriftSettings, MonitoringSettings

NAMES = [f"f{i}" for i in range(N_FEATURES)]


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["monitor", "profile", *args])
    assert result.exit_code == code, result.output
    return result.output


def test_profile_writes_reference_profile_json_that_folder_serving_reads(tmp_path: Path) -> None:
    artifact = write_demo_model(tmp_path / "models")
    folder = artifact.parent.parent
    x, y = demo_data(400)
    x = x.astype(np.float32)
    columns = {"id": np.arange(400), **{n: x[:, i] for i, n in enumerate(NAMES)}, "label": y}
    data = tmp_path / "train.parquet"
    pq.write_table(pa.table(columns), data)

    out = invoke(str(folder), "--data", str(data), "--exclude", "id,label")
    path = folder / "1" / "reference-profile.json"
    assert f"wrote {path}: 400 rows, {N_FEATURES} features, 3 prediction columns" in out
    written = folder_profiles(tmp_path / "models")("demo", "1")
    assert written is not None and written["rows"] == 400
    assert written["features"] == profile_columns({n: x[:, i] for i, n in enumerate(NAMES)})
    label, probabilities = onnxruntime.InferenceSession(
        str(artifact), providers=["CPUExecutionProvider"]
    ).run(None, {"input": x})
    assert written["predictions"]["label"] == profile_columns({"label": label})["label"]
    served = written["predictions"]["probabilities_1"]
    expected = profile_columns({"p": probabilities[:, 1]})["p"]
    assert np.allclose(served["edges"], expected["edges"], atol=1e-6)

    # The monitor of a --model-dir server now has a reference for the version.
    settings = MonitoringSettings(drift=DriftSettings(min_rows=50, skew_rows=100))
    monitor = Monitor(settings, folder_profiles(tmp_path / "models"))
    rows = x[:100]
    record = InferenceRecord(
        "r0", "demo", "1", "rest", 0.0, 0.001, 200, {"input": rows}, {"label": label[:100]}
    )
    monitor.observe(record)
    report = monitor.drift_report("demo", "1")
    assert report["reference"] is True and report["status"] == "ok"
    assert report["drifted"] == [] and not report["skew"]["skewed"]


def test_profile_refusals_are_one_line(tmp_path: Path) -> None:
    artifact = write_demo_model(tmp_path / "models")
    folder = artifact.parent.parent
    data = tmp_path / "train.parquet"
    x, _ = demo_data(50)
    pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(NAMES)}), data)
    missing = invoke(str(folder), "--data", str(data), "--version", "7", code=1)
    assert "has no version folder '7'; versions: 1" in missing
    not_a_model = invoke(str(tmp_path), "--data", str(data), code=1)
    assert "is not a model folder" in not_a_model
    wide = invoke(str(folder), "--data", str(data), "--features", "f0,f1", code=1)
    assert "reference data has 2 columns; input 'input' takes 20" in wide
    assert not (folder / "1" / "reference-profile.json").exists()
