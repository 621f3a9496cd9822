"""``inferline serve`` refuses settings it cannot start with: one line naming the setting, exit 2.

Each case runs the real CLI as a subprocess, the way an operator meets it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on (no SO_REUSEADDR/SO_REUSEPORT sharing)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, models: Path | None = None
) -> tuple[int, str]:
    if models is None:
        models = tmp_path / "models"
        models.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "inferline", "serve", "--model-dir", str(models), *args]
    environment = {**os.environ, "INFERLINE_HOME": str(tmp_path / "home"), **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    return done.returncode, done.stderr


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_rest_port_in_use_names_the_setting(tmp_path: Path, held_port: int) -> None:
    code, stderr = _serve(tmp_path, "--http-port", str(held_port), "--grpc-port", str(_free_port()))
    line = _one_line(stderr)
    assert code == 2
    assert "http_port" in line and str(held_port) in line and "in use" in line


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_grpc_port_in_use_is_refused_before_models_load(
    tmp_path: Path, model_dir: Path, held_port: int, engine: str
) -> None:
    """No model loads (it would log a line) before the refusal."""
    code, stderr = _serve(
        tmp_path,
        "--http-port",
        str(_free_port()),
        "--grpc-port",
        str(held_port),
        "--grpc-engine",
        engine,
        models=model_dir,
    )
    line = _one_line(stderr)
    assert code == 2
    assert "grpc_port" in line and str(held_port) in line and "in use" in line


@pytest.mark.parametrize("sink", ["redis", "postgres"])
def test_payload_log_sink_without_a_url_names_the_setting(tmp_path: Path, sink: str) -> None:
    code, stderr = _serve(
        tmp_path,
        "--http-port",
        str(_free_port()),
        "--grpc-port",
        str(_free_port()),
        env={"INFERLINE_PAYLOAD_LOG": sink},
    )
    line = _one_line(stderr)
    assert code == 2
    assert "payload_log_url" in line and sink in line


def test_a_malformed_value_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    code, stderr = _serve(tmp_path, env={"INFERLINE_MONITORING__DRIFT__P_VALUE": "often"})
    line = _one_line(stderr)
    assert code == 2
    assert "monitoring.drift.p_value" in line


def test_an_unknown_host_names_the_setting(tmp_path: Path) -> None:
    code, stderr = _serve(tmp_path, "--host", "no-such-host.invalid", "--http-port", "0")
    line = _one_line(stderr)
    assert code == 2
    assert "host" in line and "no-such-host.invalid" in line


def test_workers_refuse_a_port_in_use_once(tmp_path: Path, held_port: int) -> None:
    code, stderr = _serve(
        tmp_path, "--workers", "2", "--http-port", str(_free_port()), "--grpc-port", str(held_port)
    )
    line = _one_line(stderr)
    assert code == 2
    assert "grpc_port" in line and str(held_port) in line


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://ann:hunter2@127.0.0.1:1/reg", "unreachable"),
        ("mysql://ann:hunter2@127.0.0.1/reg", "cannot open registry"),
    ],
)
def test_a_registry_it_cannot_open_names_registry_url(tmp_path: Path, url: str, why: str) -> None:
    command = [sys.executable, "-m", "inferline", "serve", "--http-port", "0", "--grpc-port", "0"]
    env = {**os.environ, "INFERLINE_HOME": str(tmp_path), "INFERLINE_REGISTRY_URL": url}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    line = _one_line(done.stderr)
    assert done.returncode == 2
    assert "registry_url" in line and why in line
    assert "hunter2" not in line  # the password never reaches the terminal
