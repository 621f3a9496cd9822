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
    for ref, expected_from in ((None, model_dir), ("2", None)):
        out = tmp_path / f"out-{ref}.parquet"
        args = ["fraud", source, "-o", out, "--keep", "id"] + (["--version", ref] if ref else [])
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
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
