"""Batch jobs read models from the registry when no model folder is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pyarrow.parquet as pq

from tests.batch.conftest import demo_table, features_of, forest_reference, run_cli
from tests.lifecycle_models import forest_file


def test_batch_scores_the_production_version_from_the_registry(
    model_dir: Path, tmp_path: Path
) -> None:
    env = {"INFERLINE_HOME": str(tmp_path / "home")}
    register = ["-m", "inferline", "models", "register", "fraud"]
    other = forest_file(tmp_path / "other", seed=11)
    for path, extra in (
        (model_dir / "demo" / "1" / "model.onnx", ["--alias", "production"]),
        (other, []),
    ):
        done = subprocess.run(
            [sys.executable, *register, str(path), *extra],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    table = demo_table(500, seed=4)
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    chosen = {None: "version 1 (alias production)", "2": "version 2 (as asked)"}
    for ref, expected_from in ((None, model_dir), ("2", None)):
        out = tmp_path / f"out-{ref}.parquet"
        args = ["fraud", source, "-o", out, "--keep", "id"] + (["--version", ref] if ref else [])
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        # The job's lines say which version scored, and which rule chose it.
        assert f"fraud {chosen[ref]}: 500 rows of 500" in result.stderr
        assert f"scored 500 of 500 rows with fraud {chosen[ref]} in " in result.stderr
        scored = pq.read_table(out)
        x = features_of(table)
        if expected_from is not None:
            expected = forest_reference(expected_from, x)["label"]
        else:
            expected = onnxruntime.InferenceSession(
                str(other), providers=["CPUExecutionProvider"]
            ).run(["label"], {"input": x})[0]
        np.testing.assert_array_equal(scored.column("label").to_numpy(), expected)
        assert scored.column("id").to_pylist() == list(range(500))


def test_batch_help_and_summary_say_which_version_is_used(model_dir: Path, tmp_path: Path) -> None:
    from inferline.batch import score

    help_text = " ".join(run_cli("--help").stdout.replace("│", " ").split())
    assert "production alias, else its latest version" in help_text
    assert "with --model-dir, the newest version folder" in help_text
    source = tmp_path / "in.parquet"
    pq.write_table(demo_table(10, seed=5), source)
    summary = score("demo", source, tmp_path / "out.parquet", model_dir=model_dir, keep=["id"])
    assert (summary.version, summary.chosen) == ("1", f"newest in {model_dir}")


def test_a_registry_alias_is_named_and_a_missing_production_means_the_latest(
    model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from inferline.batch import score

    monkeypatch.setenv("INFERLINE_HOME", str(tmp_path / "home"))
    register = ["-m", "inferline", "models", "register", "fraud"]
    for extra in (["--alias", "staging"], []):
        done = subprocess.run(
            [sys.executable, *register, str(model_dir / "demo" / "1" / "model.onnx"), *extra],
            env=os.environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    source = tmp_path / "in.parquet"
    pq.write_table(demo_table(10, seed=6), source)
    staged = score("fraud", source, tmp_path / "a.parquet", version="staging", keep=["id"])
    assert (staged.version, staged.chosen) == ("1", "alias staging")
    latest = score("fraud", source, tmp_path / "b.parquet", keep=["id"])
    assert (latest.version, latest.chosen) == ("2", "latest: no production alias")
