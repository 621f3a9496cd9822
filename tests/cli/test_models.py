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
