"""One JSON log line per request, with the client's request id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from inferline.monitoring.logs import configure_logging
from inferline.server import build_server_app
from inferline.settings import Settings

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}]}


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_request_lines_are_json_with_request_id(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(model_dir=model_dir, http_port=0, grpc_port=None, request_log="info")
    configure_logging(settings.log_level, settings.log_format)
    app = build_server_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client,
    ):
        ok = await client.post(
            "/v2/models/demo/infer", json=ROW, headers={"x-request-id": "req-42"}
        )
        bad = await client.post("/v2/models/demo/infer", json={"inputs": []})
    assert ok.headers["x-request-id"] == "req-42"
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    requests = [line for line in lines if line.get("event") == "inference"]
    assert requests[0] | {"latency_ms": 0, "timestamp": ""} == {
        "event": "inference",
        "request_id": "req-42",
        "model": "demo",
        "version": "1",
        "protocol": "rest",
        "status": 200,
        "latency_ms": 0,
        "level": "info",
        "logger": "inferline.requests",
        "timestamp": "",
    }
    assert requests[0]["latency_ms"] > 0
    assert bad.status_code == 400  # refused while decoding, before the data plane: no request line
    assert len(requests) == 1
    assert any(
        line.get("logger") == "inferline.runtimes.loader" for line in lines
    )  # stdlib logs too


async def test_request_log_off(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(model_dir=model_dir, http_port=0, grpc_port=None, request_log="off")
    configure_logging(settings.log_level, settings.log_format)
    app = build_server_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client,
    ):
        await client.post("/v2/models/demo/infer", json=ROW)
    assert '"event":"inference"' not in capsys.readouterr().err
