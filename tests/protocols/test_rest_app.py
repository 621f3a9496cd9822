"""The app's fast infer dispatch answers exactly as the router would.

``build_app`` hands ``POST .../infer`` straight to :class:`v2_rest.Infer`, past
Starlette's router and exception middleware, unless user middleware is
installed. These tests drive the ASGI app directly, so they see every message:
the same request is sent down the fast dispatch (``app(...)``), down the router
(``Starlette.__call__``, what the fast dispatch skips) and to a reference
``Request``/``Response`` endpoint (the infer handler as it was before the raw
route), and the status, the header list and the body must be byte-for-byte equal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferline.codecs import decode_request, encode_response
from inferline.dataplane import DataPlane
from inferline.errors import BadRequest
from inferline.protocols.rest_app import build_app
from inferline.protocols.status import MODEL_VERSION_HEADER, REQUEST_ID_HEADER, new_request_id
from inferline.protocols.v2_rest import BINARY_HEADER, infer_path_params, read_body, routes
from inferline.settings import Settings

RID = ((b"x-request-id", b"rid-1"),)
JSON = ((b"content-type", b"application/json"),)
LIMIT = 1024 * 1024  # the conftest settings' max_body_bytes


# -- driving an ASGI app by hand -------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """A request as the server would hand it over: headers and body chunks.

    The Content-Length of the chunks is declared unless ``headers`` declare one or
    the body is ``chunked`` (streamed, no length known up front).
    """

    path: str
    chunks: tuple[bytes, ...] = (b"",)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    method: str = "POST"
    root_path: str = ""
    chunked: bool = False
    #: The client goes away after the last chunk, which said more was coming.
    disconnect: bool = False


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: Body chunks the app asked ``receive`` for.
    chunks_read: int
    #: The exception the app raised after answering (an unexpected error), if any.
    raised: str | None = None

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def body_of(payload: object, chunk: int = 0) -> tuple[bytes, ...]:
    """The JSON body, in chunks of ``chunk`` bytes if given."""
    body = json.dumps(payload).encode()
    if not chunk:
        return (body,)
    return tuple(body[i : i + chunk] for i in range(0, len(body), chunk))


async def call(app: ASGIApp, sent: Sent) -> Answer:
    headers = list(sent.headers)
    if not sent.chunked and all(k != b"content-length" for k, _ in headers):
        headers.insert(0, (b"content-length", str(sum(map(len, sent.chunks))).encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": sent.method,
        "scheme": "http",
        "path": sent.root_path + sent.path,
        "raw_path": (sent.root_path + sent.path).encode(),
        "root_path": sent.root_path,
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("inferline", 80),
    }
    pending = list(sent.chunks)
    done = asyncio.Event()
    messages: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        if pending:
            read += 1
            chunk = pending.pop(0)
            more = bool(pending) or sent.disconnect
            return {"type": "http.request", "body": chunk, "more_body": more}
        if not sent.disconnect:
            await done.wait()  # as a server does: disconnect only once the answer is sent
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    raised = None
    try:
        await app(scope, receive, send)
    except Exception as exc:  # noqa: BLE001 - answered, then re-raised for the server to log
        raised = type(exc).__name__
    if not messages:  # nothing sent: the client is gone
        return Answer(0, [], b"", read, raised)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return Answer(start["status"], list(start["headers"]), body, read, raised)


def through_router(app: Starlette) -> ASGIApp:
    """The app without its fast dispatch: Starlette's own entry point."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return asgi


def reference_infer(dataplane: DataPlane) -> Callable[[Request], Any]:
    """The infer endpoint as a Request/Response handler (before the raw ASGI route)."""
    limit = dataplane.settings.max_body_bytes

    async def infer(request: Request) -> Response:
        params = request.path_params
        dataplane.resolve(params["model"], params.get("version"))  # the model first
        header_length = request.headers.get(BINARY_HEADER)
        json_length = None
        if header_length is not None:
            if not header_length.isdigit():
                raise BadRequest(f"{BINARY_HEADER} {header_length!r} is not a number")
            json_length = int(header_length)
        body = await read_body(request, limit)
        settings = dataplane.settings
        infer_request = decode_request(
            body,
            json_length,
            max_tensors=settings.max_tensors,
            max_elements=settings.max_elements,
        )
        if "no-cache" in request.headers.get("cache-control", ""):
            infer_request.parameters["cache"] = False
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        response = await dataplane.infer(
            params["model"],
            params.get("version"),
            infer_request,
            protocol="rest",
            request_id=request_id,
        )
        payload, binary_length = encode_response(response, infer_request)
        headers = {REQUEST_ID_HEADER: request_id, MODEL_VERSION_HEADER: response.model_version}
        if binary_length is None:
            return Response(payload, 200, headers, media_type="application/json")
        headers[BINARY_HEADER] = str(binary_length)
        return Response(payload, 200, headers, media_type="application/octet-stream")

    return infer


def reference_app(dataplane: DataPlane) -> ASGIApp:
    app = build_app(dataplane)
    endpoint = reference_infer(dataplane)
    app.router.routes[:] = [
        Route(r.path, endpoint, methods=["POST"])
        if isinstance(r, Route) and r.name == "infer"
        else r
        for r in app.router.routes
    ]
    return through_router(app)


async def three_ways(dataplane: DataPlane, sent: Sent) -> tuple[Answer, Answer, Answer]:
    app = build_app(dataplane)
    fast = await call(app, sent)
    router = await call(through_router(app), sent)
    reference = await call(reference_app(dataplane), sent)
    return fast, router, reference


def assert_same(fast: Answer, *others: Answer) -> None:
    for other in others:
        assert (fast.status, fast.headers, fast.body) == (other.status, other.headers, other.body)
        assert fast.chunks_read == other.chunks_read
        assert (fast.raised is None) == (other.raised is None)


# -- requests ------------------------------------------------------------------------
def demo_tensor(rows: np.ndarray) -> dict[str, object]:
    return {
        "name": "input",
        "datatype": "FP32",
        "shape": list(rows.shape),
        "data": rows.ravel().tolist(),
    }


DEMO_ROWS = np.random.default_rng(7).normal(size=(4, 20)).astype(np.float32)
DEMO = {"inputs": [demo_tensor(DEMO_ROWS)]}
KITCHEN = {
    "inputs": [
        {"name": "fp", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8},
        {"name": "i64", "datatype": "INT64", "shape": [2, 2], "data": [1, -2, 3, -4]},
        {"name": "flag", "datatype": "BOOL", "shape": [2, 1], "data": [True, False]},
        {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["ab", "ç"]},
    ]
}


def binary_kitchen() -> tuple[tuple[bytes, ...], tuple[tuple[bytes, bytes], ...]]:
    """The kitchen request with every input as binary data, binary outputs asked for."""
    raw = {
        "fp": np.full((2, 4), 0.25, dtype=np.float32).tobytes(),
        "i64": np.array([[5, 6], [7, 8]], dtype=np.int64).tobytes(),
        "flag": np.array([[True], [False]]).tobytes(),
        "text": b"".join(struct.pack("<I", len(v)) + v for v in (b"x", b"yz")),
    }
    tensors = [
        {k: v for k, v in tensor.items() if k != "data"}
        | {"parameters": {"binary_data_size": len(raw[str(tensor["name"])])}}
        for tensor in KITCHEN["inputs"]
    ]
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    headers = ((BINARY_HEADER.encode(), str(len(header)).encode()),)
    return (header, *raw.values()), headers


BINARY_CHUNKS, BINARY_HEADERS = binary_kitchen()
RANGED_BELOW = {"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [-1, 0, 0]}
DEMO_ONE_BINARY = {
    **DEMO,
    "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
}

CASES = [
    pytest.param(Sent("/v2/models/demo/infer", body_of(DEMO), RID + JSON), 200, id="json"),
    pytest.param(
        Sent("/v2/models/demo/versions/1/infer", body_of(DEMO), RID + JSON), 200, id="versioned"
    ),
    pytest.param(Sent("/v2/models/kitchen/infer", body_of(KITCHEN), RID), 200, id="datatypes"),
    pytest.param(Sent("/v2/models/demo/infer", body_of(DEMO, 7), RID), 200, id="many-chunks"),
    pytest.param(
        Sent("/v2/models/kitchen/infer", BINARY_CHUNKS, RID + BINARY_HEADERS),
        200,
        id="binary-in-and-out",
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO_ONE_BINARY), RID), 200, id="one-binary-output"
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO), (*RID, (b"content-type", b"text/plain"))),
        200,
        id="text-content-type",
    ),
    pytest.param(
        Sent(
            "/v2/models/demo/infer",
            body_of(DEMO),
            (*RID, (b"content-type", b"application/octet-stream")),
        ),
        200,
        id="octet-stream-without-binary-header",
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO), (*RID, (b"cache-control", b"no-cache"))),
        200,
        id="no-cache",
    ),
    pytest.param(Sent("/v2/models/demo/infer", (b"{not json",), RID + JSON), 400, id="bad-json"),
    pytest.param(Sent("/v2/models/demo/infer", (b"",), RID + JSON), 400, id="empty-body"),
    pytest.param(Sent("/v2/models/demo/infer", (b"[1, 2]",), RID + JSON), 400, id="not-object"),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of({"inputs": [demo_tensor(DEMO_ROWS[:, :19])]}), RID),
        400,
        id="wrong-shape",
    ),
    pytest.param(
        Sent("/v2/models/ranged/infer", body_of({"inputs": [RANGED_BELOW]}), RID),
        400,
        id="out-of-range",
    ),
    pytest.param(Sent("/v2/models/nope/infer", body_of(DEMO), RID), 404, id="unknown-model"),
    pytest.param(
        Sent("/v2/models/demo/versions/9/infer", body_of(DEMO), RID), 404, id="unknown-version"
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO), (*RID, (BINARY_HEADER.encode(), b"abc"))),
        400,
        id="binary-header-not-a-number",
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO), (*RID, (BINARY_HEADER.encode(), b"99999"))),
        400,
        id="binary-header-past-body",
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", body_of(DEMO), (*RID, (b"content-length", b"12x"))),
        400,
        id="content-length-not-a-number",
    ),
    pytest.param(
        Sent(
            "/v2/models/demo/infer", (b"x",), (*RID, (b"content-length", str(LIMIT + 1).encode()))
        ),
        413,
        id="declared-too-large",
    ),
    pytest.param(
        Sent("/v2/models/demo/infer", (b"y" * 8192,) * 200, RID, chunked=True),
        413,
        id="streamed-too-large",
    ),
    pytest.param(Sent("/v2/models/demo/infer", method="GET", headers=RID), 405, id="get"),
    pytest.param(Sent("/v2/models/demo/infer", method="PUT", headers=RID), 405, id="put"),
    pytest.param(Sent("/v2/models/a/b/infer", body_of(DEMO), RID), 404, id="no-such-route"),
]


@pytest.mark.parametrize(("sent", "status"), CASES)
async def test_fast_dispatch_answers_as_the_router(dataplane, sent: Sent, status: int) -> None:
    fast, router, reference = await three_ways(dataplane, sent)

    assert fast.status == status, fast.body
    assert_same(fast, router, reference)
    assert fast.header(b"x-request-id") == b"rid-1"
    if status == 200:
        assert fast.header(b"inferline-model-version") == b"1"
    else:
        assert set(json.loads(fast.body)) == {"error"}


async def test_oversize_is_refused_before_the_body_is_read(dataplane) -> None:
    declared = Sent(
        "/v2/models/demo/infer",
        (b"x" * 8192,) * 200,
        ((b"content-length", str(200 * 8192).encode()),),
    )
    for answer in await three_ways(dataplane, declared):
        assert answer.status == 413 and answer.chunks_read == 0
    streamed = replace(declared, headers=(), chunked=True)
    for answer in await three_ways(dataplane, streamed):
        # 128 chunks are exactly the limit; the 129th passes it, and no more are read.
        assert answer.status == 413 and answer.chunks_read == LIMIT // 8192 + 1


async def test_the_answer_is_the_model_run_in_process(dataplane, model_dir: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(
        str(model_dir / "demo" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(None, {"input": DEMO_ROWS})
    answer = await call(build_app(dataplane), Sent("/v2/models/demo/infer", body_of(DEMO)))
    outputs = {o["name"]: o["data"] for o in json.loads(answer.body)["outputs"]}
    np.testing.assert_array_equal(outputs["label"], label)
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"], probabilities.shape), probabilities, rtol=1e-6
    )


@pytest.mark.parametrize(
    "sent",
    [
        Sent("/v2/models/demo/infer", body_of(DEMO)),
        Sent("/v2/models/nope/infer", body_of(DEMO)),
        Sent("/v2/models/demo/infer", (b"{",)),
    ],
    ids=["ok", "not-found", "bad-json"],
)
async def test_a_request_id_is_made_when_none_is_sent(dataplane, sent: Sent) -> None:
    answers = await three_ways(dataplane, sent)
    ids = [a.header(b"x-request-id") or b"" for a in answers]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3  # one per request
    blank = [[(k, b"" if k == b"x-request-id" else v) for k, v in a.headers] for a in answers]
    assert blank[0] == blank[1] == blank[2]
    assert answers[0].body == answers[1].body == answers[2].body


# -- which path a request takes ------------------------------------------------------
def recording_stack(app: Starlette) -> list[str]:
    """Record every request that reaches the app's middleware stack (and so the router)."""
    stack = app.build_middleware_stack()
    seen: list[str] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await stack(scope, receive, send)

    app.middleware_stack = recorder
    return seen


async def test_infer_requests_skip_the_router_without_user_middleware(dataplane) -> None:
    app = build_app(dataplane)
    seen = recording_stack(app)
    fast = [
        (Sent("/v2/models/demo/infer", body_of(DEMO)), 200),
        (Sent("/v2/models/demo/versions/1/infer", body_of(DEMO)), 200),
        (Sent("/v2/models/nope/infer", body_of(DEMO)), 404),
        (Sent("/v2/models/demo/infer", (b"{",)), 400),
    ]
    for sent, status in fast:
        assert (await call(app, sent)).status == status
    assert seen == []

    routed = [
        (Sent("/v2/health/live", method="GET"), 200),
        (Sent("/v2/models/demo/infer", method="GET"), 405),
        (Sent("/v2/models/a/b/infer", body_of(DEMO)), 404),
        (Sent("/v2/models/demo/infer", body_of(DEMO), root_path="/api"), 200),
    ]
    for sent, status in routed:
        assert (await call(app, sent)).status == status
    assert seen == [
        "GET /v2/health/live",
        "GET /v2/models/demo/infer",
        "POST /v2/models/a/b/infer",
        "POST /api/v2/models/demo/infer",
    ]


class Stamp:
    """Pure ASGI user middleware: records the path and adds a header to every answer."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(scope["path"])

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-stamp", b"pure")]}
            await send(message)

        await self.app(scope, receive, stamped)


def unstamped(answer: Answer) -> Answer:
    return replace(answer, headers=[h for h in answer.headers if h[0] != b"x-stamp"])


@pytest.mark.parametrize(
    "sent",
    [
        Sent("/v2/models/demo/infer", body_of(DEMO), RID),
        Sent("/v2/models/kitchen/infer", BINARY_CHUNKS, RID + BINARY_HEADERS),
        Sent("/v2/models/nope/infer", body_of(DEMO), RID),
        Sent("/v2/models/demo/infer", (b"{",), RID),
    ],
    ids=["ok", "binary", "not-found", "bad-json"],
)
async def test_user_middleware_sees_infer_requests(dataplane, sent: Sent) -> None:
    plain = await call(build_app(dataplane), sent)

    pure = build_app(dataplane)
    seen: list[str] = []
    pure.add_middleware(Stamp, seen=seen)
    stamped = await call(pure, sent)
    assert seen == [sent.path]
    assert stamped.header(b"x-stamp") == b"pure"
    assert_same(plain, unstamped(stamped))

    based = build_app(dataplane)
    dispatched: list[str] = []

    async def dispatch(request: Request, call_next: RequestResponseEndpoint) -> Response:
        dispatched.append(request.url.path)
        response = await call_next(request)
        response.headers["x-stamp"] = "base"
        return response

    based.add_middleware(BaseHTTPMiddleware, dispatch=dispatch)
    through_base = await call(based, sent)
    assert dispatched == [sent.path]
    assert through_base.header(b"x-stamp") == b"base"
    assert (through_base.status, through_base.body) == (plain.status, plain.body)


SEGMENT = st.sampled_from(["demo", "versions", "1", "infer", "", "a b", "modèle", "v2", "models"])
MIDDLE = st.lists(SEGMENT, max_size=5).map("/".join)
PATHS = st.one_of(
    MIDDLE.map(lambda middle: f"/v2/models/{middle}/infer"),
    MIDDLE.map(lambda middle: f"/{middle}"),
    st.text(alphabet="/v2modelsinfr", max_size=30).map(lambda text: f"/{text}"),
)
INFER_ROUTES = [r for r in routes(DataPlane(Settings())) if r.name == "infer"]


@example("/v2/models/demo/infer")
@example("/v2/models/demo/versions/1/infer")
@example("/v2/models/versions/infer")
@example("/v2/models//infer")
@example("/v2/models/demo/versions//infer")
@example("/v2/models/a/b/infer")
@example("/v2/models/demo/infer/")
@given(PATHS)
def test_fast_dispatch_takes_the_paths_the_router_gives_infer(path: str) -> None:
    """``infer_path_params`` and the router's two infer routes agree on every path."""
    scope = {"type": "http", "path": path, "root_path": "", "method": "POST"}
    matched = None
    for route in INFER_ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            matched = child["path_params"]
            break
    assert infer_path_params(path) == matched


# -- errors from behind the data plane: queue full and model failure -------------------
GATE_CODE = """\
import threading

STARTED = threading.Event()
GATE = threading.Event()


class Model:
    def predict(self, inputs):
        STARTED.set()
        GATE.wait(60)
        return {"y": inputs["x"].sum(axis=1)}
"""

BROKEN_CODE = """\
class Model:
    def predict(self, inputs):
        raise RuntimeError("secret internal detail")
"""

SIGNATURE = """\
runtime: python
inputs: [{name: x, datatype: FP64, shape: [-1, 2]}]
outputs: [{name: y, datatype: FP64, shape: [-1]}]
"""
# Threads (no probe on the loop), one batch at a time and one queued request at most;
# neither model could pass a warm-up (one blocks, one always fails), so none.
GATE_SETTINGS = """\
executor: thread
warmup_requests: 0
batching: {max_batch_size: 1, max_queue_size: 1, max_concurrent_batches: 1, max_queue_delay_ms: 0}
"""


@pytest.fixture
async def blocking(tmp_path: Path) -> AsyncIterator[DataPlane]:
    """``gate`` answers once the test opens its gate; ``broken`` always fails."""
    for name, code, extra in (
        ("gate", GATE_CODE, GATE_SETTINGS),
        ("broken", BROKEN_CODE, "warmup_requests: 0\n"),
    ):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.py").write_text(code)
        (tmp_path / name / "model-settings.yaml").write_text(SIGNATURE + extra)
    plane = DataPlane(Settings(model_dir=tmp_path, max_body_bytes=LIMIT))
    await plane.start()
    yield plane
    await plane.stop()


def x_request(model: str) -> Sent:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}]}
    return Sent(f"/v2/models/{model}/infer", body_of(body), RID)


async def until(condition: Callable[[], bool]) -> None:
    """Poll the event loop until ``condition`` holds (bounded by count, not by time)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


async def test_full_queue_answers_503_with_retry_after_on_every_path(blocking) -> None:
    app = build_app(blocking)
    user = blocking.resolve("gate", None).model._user  # the model.py instance
    gate = sys.modules[type(user).__module__]

    def depth() -> int:
        return int(blocking.snapshot()["queue_depth"][("gate", "1")])

    waiting = [asyncio.create_task(call(app, x_request("gate")))]  # holds the only slot
    try:
        await until(gate.STARTED.is_set)
        waiting.append(asyncio.create_task(call(app, x_request("gate"))))  # fills the queue
        await until(lambda: depth() == 1)

        fast, router, reference = await three_ways(blocking, x_request("gate"))
    finally:
        gate.GATE.set()
        done = await asyncio.gather(*waiting)
    assert fast.status == 503
    assert fast.header(b"retry-after") == b"1"
    assert "max_queue_size" in json.loads(fast.body)["error"]
    assert_same(fast, router, reference)
    assert [a.status for a in done] == [200, 200]


async def test_a_model_failure_is_the_same_500_on_every_path(blocking) -> None:
    fast, router, reference = await three_ways(blocking, x_request("broken"))
    assert fast.status == 500
    assert json.loads(fast.body) == {
        "error": "model 'broken' version 1 failed: RuntimeError; request id rid-1"
    }
    assert fast.header(b"x-request-id") == b"rid-1"
    assert_same(fast, router, reference)


async def test_a_client_gone_mid_body_is_let_go_quietly(
    dataplane, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody is left to answer and nothing failed here: no response, no traceback, one
    info line. Endpoints on Starlette's Request (the reference) get the app's handler for
    it: an answer nobody receives, and no traceback either (both were a 500, re-raised)."""
    sent = Sent("/v2/models/demo/infer", body_of(DEMO, 100)[:3], RID, chunked=True, disconnect=True)
    with caplog.at_level(logging.INFO):
        fast, router, reference = await three_ways(dataplane, sent)
    assert (fast.status, fast.raised) == (0, None)
    assert_same(fast, router)
    assert reference.raised is None
    gone = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert len(gone) == 3 and all(r.exc_info is None for r in gone)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/demo/infer", "POST"),
        ("DELETE", "/v2/health/live", "GET, HEAD"),
        ("PUT", "/api/v1/models/m/versions/1", "DELETE, GET, HEAD"),
        ("POST", "/api/v1/audit", "GET, HEAD"),
    ],
)
async def test_a_405_names_the_allowed_methods(dataplane, method: str, path: str, allow: str):
    """RFC 9110 section 15.5.6: a 405 carries Allow, in the error shape of every other error."""
    transport = httpx.ASGITransport(app=build_app(dataplane))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"error": f"method {method} is not allowed on {path}"}
