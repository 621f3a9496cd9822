"""One JSON log line per request, with the client's request id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from pathlib import Path

import httpx
import pytest
import structlog

from inferline.monitoring.logs import LINGER_SECONDS, MAX_PENDING, RequestLog, configure_logging
from inferline.monitoring.records import InferenceRecord, iso_utc
from inferline.server import build_server_app
from inferline.settings import Settings
from tests.conftest import start_server, stop_server

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
        "pid": os.getpid(),
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


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("request_id", "status", "error"),
    [
        ("req-1", 200, None),
        ('quote " back\\slash \u00e9 \u2603 \n', 200, None),
        ("req-2", 400, 'input "x" has shape [1, 19]'),
        ("", 503, None),
    ],
)
def test_rendered_line_equals_structlog_pipeline(request_id: str, status: int, error) -> None:
    """The fast line has the fields, values and order the structlog round trip writes."""
    stream = io.StringIO()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = stream
    started = time.time()
    record = InferenceRecord(
        request_id, "fr\u00e4ud", "3", "rest", started, 0.0012344, status, {}, None, error
    )
    RequestLog("info").observe(record)  # no running loop: written at once, rendered directly
    fields = {
        "request_id": request_id, "model": "fr\u00e4ud", "version": "3", "protocol": "rest",
        "status": status, "latency_ms": 1.234,
    }  # fmt: skip
    if error is not None:
        fields["error"] = error
    structlog.stdlib.get_logger("inferline.requests").info("inference", **fields)
    fast, reference = _lines(stream)
    assert list(fast) == list(reference)  # same keys, same order
    assert fast | {"timestamp": ""} == reference | {"timestamp": ""}
    # Stamped when the request was answered, in the pipeline's format.
    assert fast["timestamp"] == iso_utc(started + 0.0012344)
    assert len(fast["timestamp"]) == len(reference["timestamp"])


async def test_bound_context_variables_reach_the_line() -> None:
    stream = io.StringIO()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = stream
    log = RequestLog("info")
    structlog.contextvars.bind_contextvars(tenant="acme")
    try:
        log.observe(InferenceRecord("r1", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    finally:
        structlog.contextvars.clear_contextvars()
    log.observe(InferenceRecord("r2", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    log.flush()
    first, second = _lines(stream)
    assert first["tenant"] == "acme" and "tenant" not in second


async def test_a_batch_is_written_once_after_the_linger() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Counting()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = stream
    log = RequestLog("info")
    for i in range(50):
        log.observe(InferenceRecord(f"r{i}", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    assert stream.writes == 0  # nothing rendered or written on the requests' path
    await asyncio.sleep(0)
    assert stream.writes == 0  # not once per loop turn: a turn may hold one request
    for _ in range(200):  # the linger passes (a count, not a clock, bounds the wait)
        await asyncio.sleep(LINGER_SECONDS / 10)
        if stream.writes:
            break
    else:
        pytest.fail("the queued lines were never written")
    assert stream.writes == 1
    assert [line["request_id"] for line in _lines(stream)] == [f"r{i}" for i in range(50)]


async def test_a_full_queue_is_written_at_once_and_flush_writes_the_rest() -> None:
    stream = io.StringIO()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = stream
    log = RequestLog("info")
    for i in range(MAX_PENDING + 3):
        log.observe(InferenceRecord(f"r{i}", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    assert len(_lines(stream)) == MAX_PENDING  # memory stays bounded whatever the rate
    log.flush()  # what a stopping server does
    assert [line["request_id"] for line in _lines(stream)] == [
        f"r{i}" for i in range(MAX_PENDING + 3)
    ]


def test_every_line_a_server_writes_is_json(model_dir: Path, tmp_path: Path) -> None:
    """uvicorn's own lines (startup, shutdown) included: a log shipper sees one format."""
    log = tmp_path / "server.log"
    server = start_server(model_dir, log)
    try:
        httpx.post(f"http://{server.http_url}/v2/models/demo/infer", json=ROW).raise_for_status()
    finally:
        stop_server(server)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    loggers = {json.loads(line)["logger"] for line in lines}  # fails on any non-JSON line
    assert {"uvicorn.error", "inferline.requests", "inferline.server"} <= loggers


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_an_error_line_has_the_request_id_and_a_formatted_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from inferline.protocols.status import as_inferline_error

    configure_logging("info")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = as_inferline_error(exc, "req-77")
    assert "req-77" in error.message
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["request_id"] == "req-77"
    assert line["level"] == "error"
    assert "exc_info" not in line  # not the repr of a (type, value, traceback) tuple
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].rstrip().endswith("ValueError: boom")
    assert "test_logs.py" in line["exception"]


def test_every_line_carries_the_pid(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = stream
    logging.getLogger("inferline.x").info("stdlib")
    structlog.stdlib.get_logger("inferline.y").info("structlog")
    log = RequestLog("info")
    log.observe(InferenceRecord("r1", "m", "1", "rest", 0.0, 0.001, 200, {}, None))
    log.observe(InferenceRecord("r2", "m", "1", "rest", 0.0, 0.001, 400, {}, None, "bad"))
    lines = _lines(stream)
    assert len(lines) == 4
    assert all(line["pid"] == os.getpid() for line in lines), lines


async def test_an_unexpected_error_is_logged_once_with_its_request_id(
    dataplane, capsys: pytest.CaptureFixture[str]
) -> None:
    """Starlette re-raises what its 500 handler answered; the server must not log it again."""
    from starlette.routing import Route

    from inferline.protocols.rest_app import build_app

    async def broken(request):
        raise ZeroDivisionError("nope")

    configure_logging("info")
    app = build_app(dataplane)
    app.router.routes.append(Route("/broken", broken))
    transport = httpx.ASGITransport(app=app)  # raises what the app lets escape
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        response = await client.get("/broken", headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    assert "req-500" in response.json()["error"]
    errors = [line for line in _json_lines(capsys.readouterr().err) if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-500"
    assert "ZeroDivisionError: nope" in errors[0]["exception"]


async def test_the_server_logs_what_it_serves(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    folder = Settings(model_dir=model_dir, http_port=0, grpc_port=None, home=tmp_path)
    app = build_server_app(folder)
    async with app.router.lifespan_context(app):
        pass
    events = [line["event"] for line in _json_lines(capsys.readouterr().err)]
    assert f"serving the model folder {model_dir}" in events
    assert "serving demo version 1" in events
    assert "unloaded demo version 1" in events

    database = tmp_path / "registry.db"
    registry = Settings(
        registry_url=f"sqlite:///{database}", http_port=0, grpc_port=None, home=tmp_path
    )
    app = build_server_app(registry)
    async with app.router.lifespan_context(app):
        pass
    events = [line["event"] for line in _json_lines(capsys.readouterr().err)]
    assert f"serving the registry sqlite:///{database} (artifacts in {tmp_path}/artifacts)" in (
        events
    )


def test_a_registry_password_never_reaches_the_log() -> None:
    from inferline.settings.security import redact_url

    assert redact_url("postgresql://ann:s3cret@db:5432/reg") == "postgresql://ann:***@db:5432/reg"
    assert redact_url("postgresql://ann@db/reg") == "postgresql://ann@db/reg"
    assert redact_url("sqlite:////tmp/r.db") == "sqlite:////tmp/r.db"


async def test_alias_switches_loads_and_unloads_are_logged(
    dataplane, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    capsys.readouterr()
    dataplane.set_aliases("demo", {"production": "1"})
    dataplane.set_aliases("demo", {"production": "1"})  # no change: no line
    dataplane.set_aliases("demo", {"staging": "1"})
    await dataplane.remove("ranged", "1")
    lines = _json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == [
        "alias production of demo now points at version 1 (was none)",
        "alias production of demo removed (was version 1)",
        "alias staging of demo now points at version 1 (was none)",
        "unloaded ranged version 1",
    ]
    assert lines[-1]["model"] == "ranged" and lines[-1]["version"] == "1"


def test_console_lines_show_a_plain_traceback_without_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from inferline.protocols.status import as_inferline_error

    configure_logging("info", "console")
    secret_payload = "card 4111 1111 1111 1111"
    try:
        raise ValueError("boom")
    except ValueError as exc:
        as_inferline_error(exc, "req-9")
    err = capsys.readouterr().err
    assert "request_id=req-9" in err and f"pid={os.getpid()}" in err
    assert "Traceback (most recent call last):" in err and "ValueError: boom" in err
    assert secret_payload not in err  # no frame's local variables
