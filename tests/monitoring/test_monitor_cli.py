"""``inferline monitor`` against a real ``inferline serve`` on a registry with a profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from inferline.cli.demo import N_FEATURES, demo_data
from tests.conftest import start_server, stop_server
from tests.lifecycle_models import forest_file

pytestmark = pytest.mark.e2e

NAMES = [f"f{i}" for i in range(N_FEATURES)]


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_monitor_quality_and_drift_read_a_running_server(tmp_path: Path) -> None:
    env = {
        "INFERLINE_HOME": str(tmp_path / "home"),
        "INFERLINE_REGISTRY_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        # Nested settings reach the server through the environment.
        "INFERLINE_MONITORING__DRIFT__SKEW_ROWS": "100",
    }
    features, labels = demo_data(2000)
    reference = tmp_path / "reference.csv"
    header = ",".join(NAMES)
    np.savetxt(reference, features[:800], delimiter=",", header=header, comments="", fmt="%.6f")
    model = forest_file(tmp_path / "model", seed=1)
    run(env, "models", "register", "fraud", str(model), "--alias", "production",
        "--reference", str(reference))  # fmt: skip

    rows, truth = features[1000:1400].copy(), labels[1000:1400]
    rows[:, 0] += 3 * features[:800, 0].std()  # f0 served far from where it was trained
    server = start_server(None, tmp_path / "server.log", env=env)
    try:
        url = f"http://{server.http_url}"
        predicted = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for start in range(0, len(rows), 20):
                part = rows[start : start + 20]
                body = {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": list(part.shape),
                         "data": part.ravel().tolist()}
                    ],
                    "outputs": [{"name": "label"}],
                }  # fmt: skip
                response = client.post(
                    "/v2/models/fraud/infer", json=body, headers={"x-request-id": f"q{start}"}
                )
                assert response.status_code == 200, response.text
                predicted += response.json()["outputs"][0]["data"]
            feedback = [
                {"request_id": f"q{start}", "truth": truth[start : start + 20].tolist()}
                for start in range(0, len(rows), 20)
            ]
            answer = client.post("/api/v1/feedback", json={"feedback": feedback}).json()
            assert answer == {"accepted": 20, "unknown": [], "rejected": []}

        out = run(env, "monitor", "quality", "fraud", "--server", url)
        assert "fraud version 1: classification, 400 pairs" in out
        assert f"{accuracy_score(truth, predicted):.4f}" in out

        html = tmp_path / "report.html"
        out = run(env, "monitor", "drift", "fraud", "--server", url, "--html", str(html))
        cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()]
        table = {row[0]: row[1:] for row in cells if row}
        kind, method, _, threshold, drifted = table["f0"]
        # 20 features tested together: each at 0.05 / 20 (Bonferroni).
        assert (kind, method, threshold, drifted) == ("input", "ks", "0.0025", "yes")
        assert "1 of 20 features drifted (5%): no dataset drift" in " ".join(out.split())
        assert re.search(r"training/serving skew \(block \d, 100 rows\): f0\n", out), out
        page = html.read_text()
        columns = N_FEATURES + 1  # the features and the label prediction
        assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == columns
        assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")

        missing = subprocess.run(
            [sys.executable, "-m", "inferline", "monitor", "drift", "nope", "--server", url],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert missing.returncode == 1 and "model 'nope' not found" in missing.stderr
    finally:
        stop_server(server)
