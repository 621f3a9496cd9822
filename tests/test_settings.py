"""Settings: precedence, model-settings files, and the generated reference page."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from inferline.errors import ModelLoadError
from inferline.settings import QualitySettings, Settings, load_model_settings
from scripts.settings_doc import DOC, render


def test_reference_page_is_current() -> None:
    assert DOC.read_text() == render(), "run: .venv/bin/python scripts/settings_doc.py"


def test_precedence_flags_env_file_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "inferline.yaml"
    config.write_text("http_port: 9001\ngrpc_port: 9002\nworkers: 3\n")
    monkeypatch.setenv("INFERLINE_GRPC_PORT", "9102")
    monkeypatch.setenv("INFERLINE_WORKERS", "4")
    settings = Settings.load(config, workers=5, host=None)
    assert settings.http_port == 9001  # file
    assert settings.grpc_port == 9102  # env beats file
    assert settings.workers == 5  # flag beats env
    assert settings.host == "127.0.0.1"  # default


def test_model_settings_name_defaults_to_folder(tmp_path: Path) -> None:
    folder = tmp_path / "fraud"
    folder.mkdir()
    (folder / "model-settings.yaml").write_text("runtime: onnx\n")
    settings = load_model_settings(folder)
    assert settings.name == "fraud" and settings.runtime == "onnx"
    assert settings.batching.max_batch_size == 0


def test_env_overrides_model_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model-settings.yaml").write_text("runtime: onnx\ntimeout_ms: 100\n")
    monkeypatch.setenv("INFERLINE_MODEL_TIMEOUT_MS", "250")
    assert load_model_settings(folder).timeout_ms == 250


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runtime: onnx\nbogus: 1\n", "bogus"),
        ("inputs: []\n", "runtime"),
        (
            "runtime: onnx\ninputs: [{name: a, datatype: FP99, shape: [1]}]\n",
            "unknown datatype 'FP99'",
        ),
        ("runtime: onnx\ninputs: [{name: a, datatype: FP32, shape: [-2]}]\n", "below -1"),
        (
            "runtime: onnx\ninputs: [{name: a, datatype: FP32, shape: [1]}, {name: a, datatype: FP32, shape: [1]}]\n",
            "duplicate input",
        ),
        ("- just a list\n", "expected a mapping"),
        ("runtime: [unclosed\n", "cannot read"),
    ],
)
def test_bad_model_settings_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model-settings.yaml").write_text(text)
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[")):
        load_model_settings(folder)


def test_a_feedback_store_url_needs_redis_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    assert QualitySettings(store_url="redis://h:6379/0").store_url == "redis://h:6379/0"
    with pytest.raises(ValidationError, match="must be a redis://, rediss:// or unix:// URL"):
        QualitySettings(store_url="postgresql://user:secret@h/db")
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the extra were not installed
    with pytest.raises(ValidationError, match=r"pip install 'inferline\[redis\]'"):
        QualitySettings(store_url="redis://h:6379/0")


def test_a_refused_store_url_does_not_echo_its_password() -> None:
    from pydantic import ValidationError

    from inferline.settings import MonitoringSettings

    with pytest.raises(ValidationError) as refused:
        MonitoringSettings.model_validate({"quality": {"store_url": "http://u:s3cret@host/0"}})
    assert "store_url must be" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_server_settings_errors_do_not_echo_urls() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"monitoring": {"quality": {"store_url": "http://u:s3cret@h/0"}}})
    assert "store_url" in str(refused.value) and "s3cret" not in str(refused.value)
