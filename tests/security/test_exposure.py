"""Secure defaults at start-up, and unchanged tritonclient clients against a real server."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inferline import server
from inferline.cli.main import app
from inferline.security import Guard
from inferline.security.exposure import is_loopback, startup_message
from inferline.security.keys import KeyStore
from inferline.settings import Settings
from tests.conftest import start_server, stop_server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INFERLINE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_serve_on_all_interfaces_without_auth_refuses(model_dir: Path, home: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--model-dir", str(model_dir), "--host", "0.0.0.0", "--http-port", "0"]
    )
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in result.output
    assert not (home / "registry.db").exists()  # looking for keys created nothing


def test_insecure_or_a_key_or_jwt_allows_it(model_dir: Path, home: Path) -> None:
    exposed = Settings(model_dir=model_dir, host="0.0.0.0")
    with pytest.raises(ValueError, match="--insecure"):
        server.preflight(exposed)
    server.preflight(exposed.model_copy(update={"insecure": True}))
    server.preflight(Settings(model_dir=model_dir, host="127.0.0.1"))
    jwt = exposed.auth.model_validate({"jwt": {"secret": "x" * 40}})
    server.preflight(exposed.model_copy(update={"auth": jwt}))
    store = KeyStore(exposed.registry_database)
    store.create("ops", ["admin"])
    store.close()
    server.preflight(exposed)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.1.2.3", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("myhost", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_start_says_why(model_dir: Path, home: Path) -> None:
    local = Settings(model_dir=model_dir)
    guard = Guard(local)
    guard.refresh()
    level, line = startup_message(local, guard)
    assert level == logging.WARNING and "authentication is OFF" in line and "only" in line
    exposed = local.model_copy(update={"host": "0.0.0.0", "insecure": True})
    level, line = startup_message(exposed, guard)
    assert "--insecure" in line and "anyone" in line
    store = KeyStore(local.registry_database)
    store.create("ops", ["admin"])
    store.close()
    guard.refresh()
    level, line = startup_message(local, guard)
    assert level == logging.INFO and "authentication is on: 1 API key(s)" in line


def test_tritonclient_sends_keys_with_headers(model_dir: Path, tmp_path: Path) -> None:
    """Unchanged tritonclient (HTTP and gRPC) authenticates with ``headers=``."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    home = tmp_path / "home"
    store = KeyStore(f"sqlite:///{home / 'registry.db'}")
    _, secret = store.create("web", ["predict:ranged"])
    store.close()
    process = start_server(model_dir, tmp_path / "log", env={"INFERLINE_HOME": str(home)})
    bearer = f"Bearer {secret}"
    rows = np.array([[0.1, 5.0, -0.5]], dtype=np.float64)
    try:
        http = triton_http.InferenceServerClient(process.http_url)
        assert http.is_server_ready()  # public
        tensor = triton_http.InferInput("x", [1, 3], "FP64")
        tensor.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException, match="needs credentials"):
            http.infer("ranged", [tensor])
        # (a fresh dict each call: tritonclient.http adds its own headers to the one passed)
        answer = http.infer("ranged", [tensor], headers={"authorization": bearer})
        np.testing.assert_allclose(answer.as_numpy("y"), rows.sum(axis=1))
        with pytest.raises(InferenceServerException, match="may not"):
            http.infer("kitchen", [tensor], headers={"authorization": bearer})
        grpc_client = triton_grpc.InferenceServerClient(process.grpc_url)
        tensor = triton_grpc.InferInput("x", [1, 3], "FP64")
        tensor.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            grpc_client.infer("ranged", [tensor])
        answer = grpc_client.infer("ranged", [tensor], headers={"authorization": bearer})
        np.testing.assert_allclose(answer.as_numpy("y"), rows.sum(axis=1))
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
            grpc_client.get_model_metadata("kitchen", headers={"authorization": bearer})
        grpc_client.close()
    finally:
        stop_server(process)
    log = (tmp_path / "log").read_text()
    assert "authentication is on: 1 API key(s)" in log
    assert "refused (unauthenticated)" in log and "as key:web" in log
    assert secret not in log


def test_serve_flags_reach_the_settings(
    model_dir: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(server, "run", served.append)
    flags = ["--host", "0.0.0.0", "--insecure", "--allow-code-upload"]
    result = CliRunner().invoke(app, ["serve", "--model-dir", str(model_dir), *flags])
    assert result.exit_code == 0, result.output
    assert served[0].insecure and served[0].allow_code_upload and served[0].host == "0.0.0.0"


# geventhttpclient (under tritonclient.http) still calls the deprecated ssl.match_hostname.
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_tritonclient_with_ssl_and_a_key(model_dir: Path, tmp_path: Path, engine: str) -> None:
    """The issue's promise end to end: ``inferline serve --tls-cert … --tls-key …`` with an
    API key, and unchanged tritonclient with ``ssl=True`` and ``headers=`` on HTTP and on
    either gRPC engine."""
    import gevent.ssl
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    from tests.transport.pki import Authority

    (tmp_path / "pki").mkdir()
    authority = Authority(tmp_path / "pki", "first")
    issued = authority.issue("server")
    home = tmp_path / "home"
    store = KeyStore(f"sqlite:///{home / 'registry.db'}")
    _, secret = store.create("web", ["predict:ranged"])
    store.close()
    flags = ("--tls-cert", str(issued.cert), "--tls-key", str(issued.key))
    process = start_server(
        model_dir,
        tmp_path / "log",
        *flags,
        "--grpc-engine",
        engine,
        env={"INFERLINE_HOME": str(home)},
        verify=authority.path,
    )
    rows = np.array([[0.1, 5.0, -0.5]], dtype=np.float64)
    try:
        context = gevent.ssl.create_default_context(cafile=str(authority.path))
        http = triton_http.InferenceServerClient(
            process.http_url, ssl=True, ssl_context_factory=lambda *_, **__: context
        )
        tensor = triton_http.InferInput("x", [1, 3], "FP64")
        tensor.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException, match="needs credentials"):
            http.infer("ranged", [tensor])
        answer = http.infer("ranged", [tensor], headers={"authorization": f"Bearer {secret}"})
        np.testing.assert_allclose(answer.as_numpy("y"), rows.sum(axis=1))
        http.close()
        grpc_client = triton_grpc.InferenceServerClient(
            f"localhost:{process.grpc_port}", ssl=True, root_certificates=str(authority.path)
        )
        tensor = triton_grpc.InferInput("x", [1, 3], "FP64")
        tensor.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            grpc_client.infer("ranged", [tensor])
        answer = grpc_client.infer(
            "ranged", [tensor], headers={"authorization": f"Bearer {secret}"}
        )
        np.testing.assert_allclose(answer.as_numpy("y"), rows.sum(axis=1))
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
            grpc_client.infer("kitchen", [tensor], headers={"authorization": f"Bearer {secret}"})
        grpc_client.close()
    finally:
        stop_server(process)
    assert secret not in (tmp_path / "log").read_text()
