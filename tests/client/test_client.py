"""inferline.client against real servers: REST, and gRPC on both engines.

Answers are compared with the model run in process (onnxruntime for the demo
forest, the kitchen model's reference function); server errors must come back
as the class the server raised; retries and balancing are counted where the
calls land, in the server's data plane.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inferline.client import AsyncClient, InferResult
from inferline.dataplane import DataPlane
from inferline.errors import (
    BadRequest,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from inferline.security import Guard
from tests.client.conftest import Recorder, serve
from tests.conftest import free_port, kitchen_reference
from tests.security.conftest import AuthWorld, auth, auth_plane, guard

__all__ = ["auth", "auth_plane", "guard"]  # the authenticated world's fixtures
ort = pytest.importorskip("onnxruntime")


def demo_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 20)).astype(np.float32)


def forest(model_dir: Path) -> object:
    path = model_dir / "demo" / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_demo(result: InferResult, rows: np.ndarray, session: object) -> None:
    label, probabilities = session.run(None, {"input": rows})  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.outputs["label"], label)
    # float32 sums in another order (server threads): a few ulps apart
    np.testing.assert_allclose(result.outputs["probabilities"], probabilities, atol=1e-6)


async def test_answers_equal_the_model_in_process(
    dataplane: DataPlane, kind: str, model_dir: Path
) -> None:
    rows = demo_rows(64)
    async with serve(dataplane, kind) as url, AsyncClient([url]) as client:
        result = await client.infer("demo", {"input": rows}, request_id="req-1")
        assert await client.ready("demo")
        meta = await client.metadata("demo")
    assert_demo(result, rows, forest(model_dir))
    assert result.outputs["label"].dtype == np.int64
    assert (result.model_name, result.model_version, result.request_id) == ("demo", "1", "req-1")
    assert result.endpoint == url
    assert meta["name"] == "demo"
    assert [i["name"] for i in meta["inputs"]] == ["input"]


async def test_bytes_and_every_type_round_trip(dataplane: DataPlane, kind: str) -> None:
    text = np.array([["héllo"], ["wörld"], [""]], dtype=object)
    inputs = {
        "fp": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "i64": np.array([[1, -2], [2**40, 0], [-(2**62), 5]], dtype=np.int64),
        "flag": np.array([[True], [False], [True]]),
        "text": text,
    }
    async with serve(dataplane, kind) as url, AsyncClient(url) as client:
        result = await client.infer("kitchen", inputs)
    # The python runtime hands the model BYTES as bytes: the reference gets them so too.
    as_sent = np.array([[v.encode()] for v in text.ravel()], dtype=object)
    expected = kitchen_reference({**inputs, "text": as_sent})
    for name in ("fp_sum", "i64_double", "flag_not", "text_upper"):
        np.testing.assert_array_equal(result.outputs[name], expected[name])
        assert result.outputs[name].dtype == expected[name].dtype


async def test_bytes_that_are_not_utf8_travel_raw(dataplane: DataPlane, kind: str) -> None:
    """The echo of an undecodable element proves it went as binary, not as JSON."""
    inputs = {
        "fp": np.zeros((1, 4), np.float32),
        "i64": np.zeros((1, 2), np.int64),
        "flag": np.zeros((1, 1), bool),
        "text": np.array([[b"ok"]], dtype=object),
    }
    async with serve(dataplane, kind) as url, AsyncClient(url) as client:
        result = await client.infer("kitchen", inputs, outputs=["text_upper"])
    assert list(result.outputs) == ["text_upper"]
    assert result.outputs["text_upper"][0, 0] == b"OK"


async def test_server_errors_come_back_as_their_classes(dataplane: DataPlane, kind: str) -> None:
    async with serve(dataplane, kind) as url, AsyncClient(url) as client:
        with pytest.raises(ModelNotFound):
            await client.infer("nope", {"input": demo_rows(1)})
        with pytest.raises(ModelNotFound):
            await client.metadata("nope")
        with pytest.raises(InvalidInput, match="input") as caught:
            await client.infer("demo", {"input": np.zeros((2, 3), np.float32)})
        assert isinstance(caught.value, BadRequest)
        assert caught.value.message  # the server's own message, not a status line
        assert [e.answered for e in client.endpoints] == [3]  # an error answer is an answer


async def test_auth_errors_and_a_valid_token(
    auth_plane: DataPlane, guard: Guard, auth: AuthWorld, kind: str
) -> None:
    inputs = {
        "fp": np.zeros((1, 4), np.float32),
        "i64": np.zeros((1, 2), np.int64),
        "flag": np.zeros((1, 1), bool),
        "text": np.array([["a"]], dtype=object),
    }

    def token(name: str) -> str:
        return auth.creds[name].split(" ", 1)[1]

    async with serve(auth_plane, kind, guard) as url:
        async with AsyncClient(url) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.infer("kitchen", inputs)
        async with AsyncClient(url, token=token("key-wrong")) as wrong:
            with pytest.raises(Unauthenticated):
                await wrong.infer("kitchen", inputs)
        async with AsyncClient(url, token=token("key-reader")) as reader:
            with pytest.raises(PermissionDenied):
                await reader.infer("kitchen", inputs)
        async with AsyncClient(url, token=token("jwt-hs-kitchen")) as allowed:
            result = await allowed.infer("kitchen", inputs)
    assert result.outputs["text_upper"][0, 0] == b"A"


async def test_503_is_retried_until_it_passes(
    dataplane: DataPlane, kind: str, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    recorder = Recorder(dataplane, monkeypatch)
    recorder.fail = 2
    rows = demo_rows(3)
    async with serve(dataplane, kind) as url, AsyncClient(url, retries=3, backoff=0.001) as c:
        result = await c.infer("demo", {"input": rows})
    assert recorder.calls == 3
    assert_demo(result, rows, forest(model_dir))


async def test_503_past_the_retries_is_raised(
    dataplane: DataPlane, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(dataplane, monkeypatch)
    recorder.fail = 10
    async with serve(dataplane, kind) as url, AsyncClient(url, retries=2, backoff=0.001) as c:
        with pytest.raises(Unavailable, match="injected"):
            await c.infer("demo", {"input": demo_rows(1)})
    assert recorder.calls == 3  # the call and two retries


async def test_4xx_is_never_retried(
    dataplane: DataPlane, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(dataplane, monkeypatch)
    async with serve(dataplane, kind) as url, AsyncClient(url, retries=3, backoff=0.001) as c:
        with pytest.raises(InvalidInput):
            await c.infer("demo", {"input": np.zeros((1, 3), np.float32)})
    assert recorder.calls == 1


async def test_the_timeout_covers_every_attempt(
    dataplane: DataPlane, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(dataplane, monkeypatch)
    recorder.gate = asyncio.Event()  # never opened: the server holds every call
    async with serve(dataplane, kind) as url, AsyncClient(url, timeout=0.3) as client:
        with pytest.raises(DeadlineExceeded):
            await client.infer("demo", {"input": demo_rows(1)})
        recorder.gate.set()
    assert recorder.calls == 1


async def test_round_robin_spreads_the_calls(
    dataplane: DataPlane,
    second_plane: DataPlane,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = Recorder(dataplane, monkeypatch), Recorder(second_plane, monkeypatch)
    async with (
        serve(dataplane, kind) as a,
        serve(second_plane, kind) as b,
        AsyncClient([a, b], balance="round_robin") as client,
    ):
        for _ in range(20):
            await client.infer("demo", {"input": demo_rows(1)})
    assert (first.calls, second.calls) == (10, 10)


async def test_least_outstanding_prefers_the_idle_endpoint(
    dataplane: DataPlane,
    second_plane: DataPlane,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy, idle = Recorder(dataplane, monkeypatch), Recorder(second_plane, monkeypatch)
    busy.gate = asyncio.Event()
    async with (
        serve(dataplane, kind) as a,
        serve(second_plane, kind) as b,
        AsyncClient([a, b], balance="least_outstanding") as client,
    ):
        held: list[asyncio.Task[InferResult]] = []
        while busy.held == 0:  # until one call sits on the busy endpoint
            held.append(asyncio.create_task(client.infer("demo", {"input": demo_rows(1)})))
            for _ in range(500):
                if busy.held or held[-1].done():
                    break
                await asyncio.sleep(0.01)
        for _ in range(20):
            await client.infer("demo", {"input": demo_rows(1)})
        assert (busy.calls, idle.calls - (len(held) - 1)) == (1, 20)
        busy.gate.set()
        await asyncio.gather(*held)


async def test_round_robin_does_not_look_at_the_load(
    dataplane: DataPlane,
    second_plane: DataPlane,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control for the test above: round-robin sends half the calls to the busy one."""
    busy, idle = Recorder(dataplane, monkeypatch), Recorder(second_plane, monkeypatch)
    busy.gate = asyncio.Event()
    async with (
        serve(dataplane, kind) as a,
        serve(second_plane, kind) as b,
        AsyncClient([a, b], balance="round_robin") as client,
    ):
        calls = [
            asyncio.create_task(client.infer("demo", {"input": demo_rows(1)})) for _ in range(10)
        ]
        for _ in range(500):
            if busy.held + idle.calls == 10:
                break
            await asyncio.sleep(0.01)
        assert (busy.held, idle.calls) == (5, 5)
        busy.gate.set()
        await asyncio.gather(*calls)


async def test_a_dead_endpoint_leaves_the_rotation(
    dataplane: DataPlane, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(dataplane, monkeypatch)
    scheme = "http" if kind == "rest" else "grpc"
    dead = f"{scheme}://127.0.0.1:{free_port()}"
    async with (
        serve(dataplane, kind) as live,
        AsyncClient([dead, live], balance="round_robin", backoff=0.001) as client,
    ):
        for _ in range(10):
            result = await client.infer("demo", {"input": demo_rows(1)})
            assert result.endpoint == live
        down, up = client.endpoints
    assert recorder.calls == 10
    assert (down.answered, up.answered) == (0, 10)
    assert down.down_until > 0
