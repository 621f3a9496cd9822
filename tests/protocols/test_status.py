"""One error renderer per transport: every REST route family, both gRPC engines.

A model that fails as the test says is asked through each REST route family
(V2 infer on the fast path and through the router, TF Serving, MLflow) and
both gRPC engines; the answers must be what :func:`rest_error` and
:func:`grpc_error` give for that error, header for header and byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from inferline.dataplane import DataPlane
from inferline.errors import InferlineError, InternalError, QueueFull
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc
from inferline.protocols.rest_app import build_app, error_response
from inferline.protocols.status import grpc_error, rest_error
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import ModelSettings, Settings, TensorSpec
from tests.protocols.grpc_servers import ENGINES, start_server

RID = "rid-7"


class Failing(Model):
    """Raises ``self.error`` when set, else answers ``y = x[:, 0]``."""

    def __init__(self) -> None:
        settings = ModelSettings(
            name="failing",
            runtime="python",
            inputs=[TensorSpec(name="x", datatype="FP64", shape=[-1, 1])],
            outputs=[TensorSpec(name="y", datatype="FP64", shape=[-1])],
            warmup_requests=0,
        )
        super().__init__(settings, "1", Path("."))
        self.error: Exception | None = None

    async def load(self) -> None:
        return None

    async def predict(self, inputs: Inputs) -> Outputs:
        if self.error is not None:
            raise self.error
        return {"y": inputs["x"][:, 0]}


class Passthrough(BaseHTTPMiddleware):
    """User middleware: the app then sends V2 infer through the router too."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


@pytest.fixture
async def plane() -> AsyncIterator[DataPlane]:
    plane = DataPlane(Settings())
    await plane.start(scan=False)
    model = Failing()
    await model.bind(plane.executor)
    await plane.add(model)
    yield plane
    await plane.stop()


V2 = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [2.0]}]}
#: (family, path, body, error body shape) for one inference of each REST route family
FAMILIES = [
    ("v2", "/v2/models/failing/infer", V2, None),
    ("v2 versioned", "/v2/models/failing/versions/1/infer", V2, None),
    ("tfserving", "/v1/models/failing:predict", {"instances": [[2.0]]}, None),
    ("tfserving versioned", "/v1/models/failing/versions/1:predict", {"inputs": [[2.0]]}, None),
    ("mlflow", "/models/failing/invocations", {"inputs": [[2.0]]}, "mlflow"),
    ("mlflow plain", "/invocations", {"dataframe_split": {"data": [[2.0]]}}, "mlflow"),
]

#: The failures: (raised by the model, the error the client must get)
FAILURES = {
    "inferline error with headers": (
        QueueFull("model 'failing' is busy"),
        QueueFull("model 'failing' is busy"),
    ),
    "model bug": (
        RuntimeError("secret detail"),
        InternalError(f"model 'failing' version 1 failed: RuntimeError; request id {RID}"),
    ),
}


async def post_everywhere(plane: DataPlane) -> dict[str, tuple[int, list[Any], bytes]]:
    """Each family's answer, the V2 ones both on the fast path and through the router."""
    fast = build_app(plane)
    routed = build_app(plane)
    routed.add_middleware(Passthrough)
    answers = {}
    for label, app in (("", fast), (" routed", routed)):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            for family, path, body, _ in FAMILIES:
                if label and not family.startswith("v2"):
                    continue
                response = await client.post(path, json=body, headers={"x-request-id": RID})
                answers[family + label] = (
                    response.status_code,
                    response.headers.raw,
                    response.content,
                )
    return answers


def expected(error: InferlineError, shape: str | None) -> tuple[int, list[Any], bytes]:
    status, headers, body = rest_error(error, RID, shape)
    return status, headers, body


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_every_rest_family_answers_a_model_failure_through_the_one_renderer(
    plane: DataPlane, failure: str
) -> None:
    raised, seen = FAILURES[failure]
    model = plane.resolve("failing", None).model
    assert isinstance(model, Failing)
    model.error = raised
    answers = await post_everywhere(plane)
    assert len(answers) == len(FAMILIES) + 2
    shapes = {family: shape for family, _, _, shape in FAMILIES}
    for family, answer in answers.items():
        shape = shapes[family.removesuffix(" routed")]
        assert answer == expected(seen, shape), family
        body = json.loads(answer[2])
        if shape == "mlflow":
            code = "TEMPORARILY_UNAVAILABLE" if answer[0] == 503 else "INTERNAL_ERROR"
            assert body == {"error_code": code, "message": seen.message}, family
        else:
            assert body == {"error": seen.message}, family
        headers = dict(answer[1])
        assert headers[b"x-request-id"] == RID.encode()
        assert (b"retry-after" in headers) == isinstance(seen, QueueFull)
        assert b"Traceback" not in answer[2] and b"secret" not in answer[2]


async def test_an_unexpected_error_is_the_same_internal_error_on_every_family(
    plane: DataPlane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an InferlineError, and not from the model: the app's fallback renders it."""

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret detail")

    monkeypatch.setattr(plane, "infer", broken)
    with caplog.at_level(logging.ERROR, logger="inferline.protocols.status"):
        answers = await post_everywhere(plane)
    seen = InternalError(f"internal error; request id {RID}")
    shapes = {family: shape for family, _, _, shape in FAMILIES}
    for family, answer in answers.items():
        assert answer == expected(seen, shapes[family.removesuffix(" routed")]), family
    # the traceback goes to the log, under the request id
    logged = [r for r in caplog.records if r.name == "inferline.protocols.status"]
    assert len(logged) >= len(answers)
    assert all(r.exc_info is not None and RID in r.getMessage() for r in logged)


def test_the_app_registers_the_one_renderer_for_every_exception(plane: DataPlane) -> None:
    handlers = build_app(plane).exception_handlers
    assert handlers[InferlineError] is error_response
    assert handlers[Exception] is error_response


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("failure", list(FAILURES))
async def test_both_grpc_engines_answer_through_the_one_renderer(
    plane: DataPlane, engine: str, failure: str
) -> None:
    raised, seen = FAILURES[failure]
    model = plane.resolve("failing", None).model
    assert isinstance(model, Failing)
    model.error = raised
    code, message, trailers = grpc_error(seen, [("x-request-id", RID)])
    request = pb.ModelInferRequest(model_name="failing")
    request.inputs.add(name="x", datatype="FP64", shape=[1, 1])
    request.raw_input_contents.append(np.array([[2.0]]).tobytes())
    server, address = await start_server(plane, plane.settings, engine)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(request, metadata=(("x-request-id", RID),))
    finally:
        await server.stop(None)
    assert info.value.code() == grpc.StatusCode[code]
    assert info.value.details() == message
    got = [(k, v) for k, v in info.value.trailing_metadata() if k in dict(trailers)]
    assert got == trailers
