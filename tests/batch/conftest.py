"""Batch fixtures: input tables, a reference for the demo forest, one SparkSession per run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pyarrow as pa
import pytest

FEATURES = [f"f{i}" for i in range(20)]


def demo_table(rows: int, seed: int = 0) -> pa.Table:
    """An ``id`` column and the demo forest's 20 float32 features."""
    x = np.random.default_rng(seed).normal(size=(rows, 20)).astype(np.float32)
    columns = {"id": np.arange(rows, dtype=np.int64)}
    columns.update({name: x[:, i] for i, name in enumerate(FEATURES)})
    return pa.table(columns)


def features_of(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(name).to_numpy() for name in FEATURES]).astype(np.float32)


def forest_reference(model_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The demo forest run by onnxruntime here, as the ONNX runtime configures it (one thread)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_dir / "demo" / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(None, {"input": x})
    return {"label": label, "probabilities": probabilities}


def run_cli(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "inferline", "batch", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local[2] SparkSession for the whole run: starting Spark takes seconds."""
    missing = []
    try:
        import pyspark  # noqa: F401
    except ImportError:
        missing.append("pyspark (pip install 'inferline[spark]')")
    if shutil.which("java") is None:
        missing.append("Java 17 (apt-get install openjdk-17-jre-headless)")
    if missing:
        pytest.skip(f"Spark tests need {' and '.join(missing)}")
    from pyspark.sql import SparkSession

    # pyspark starts its Python workers with this interpreter only if told so here.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("inferline-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
