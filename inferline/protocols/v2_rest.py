"""The Open Inference Protocol (V2) over HTTP: JSON tensors and binary data.

Handlers are plain Starlette endpoints: parse, call the data plane, encode. No
per-request pydantic model; errors travel as InferlineError to the one handler
in :mod:`inferline.protocols.rest_app`.

The infer route is the hot path, so it is a raw ASGI app (:class:`Infer`): it
reads the few headers it needs from the scope, the body from ``receive``, and
sends two messages, with no Request or Response object per call. Its routes come
first in the table, and the app hands it infer requests before the router and
the exception middleware (:func:`infer_path_params`). Answers and errors are the
same as the other endpoints'.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inferline.codecs import decode_request, encode_response
from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, InferlineError, PayloadTooLarge
from inferline.protocols.status import (
    CACHE_HEADER,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    new_request_id,
    rest_error,
)

logger = logging.getLogger(__name__)

__all__ = ["BINARY_HEADER", "Infer", "infer_path_params", "json_response", "read_body", "routes"]

BINARY_HEADER = "inference-header-content-length"
_JSON = "application/json"
_BINARY = "application/octet-stream"
_BINARY_HEADER_KEY = BINARY_HEADER.encode()
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
_VERSION_KEY = MODEL_VERSION_HEADER.encode()
_CACHE_KEY = CACHE_HEADER.encode()
_JSON_TYPE = _JSON.encode()
_BINARY_TYPE = _BINARY.encode()

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(request: Request, payload: Any, status: int = 200) -> Response:
    headers = {REQUEST_ID_HEADER: request.headers.get(REQUEST_ID_HEADER) or new_request_id()}
    return Response(orjson.dumps(payload), status, headers, media_type=_JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True
            raise BadRequest(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def routes(dataplane: DataPlane) -> list[Route]:
    """Every V2 route; versioned and unversioned model paths come from one table."""
    limit = dataplane.settings.max_body_bytes

    async def live(request: Request) -> Response:
        return json_response(request, {"live": dataplane.live()})

    async def ready(request: Request) -> Response:
        if dataplane.ready():
            return json_response(request, {"ready": True})
        # Which models hold readiness back, and why (a failed load names its reason).
        payload = {"ready": False, "models_not_ready": dataplane.not_ready()}
        return json_response(request, payload, 503)

    async def server_metadata(request: Request) -> Response:
        return json_response(request, dataplane.server_metadata())

    async def model_metadata(request: Request) -> Response:
        name, version = _model_path(request)
        return json_response(request, dataplane.model_metadata(name, version))

    async def model_ready(request: Request) -> Response:
        name, version = _model_path(request)
        is_ready = dataplane.model_ready(name, version)
        payload = {"name": name, "ready": is_ready}
        return json_response(request, payload, 200 if is_ready else 503)

    infer = Infer(dataplane, limit)
    prefixes = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    # The infer routes first: the router tries routes in order, and these are the hot ones.
    table: list[Route] = [
        Route(prefix + "/infer", infer, methods=["POST"], name="infer") for prefix in prefixes
    ]
    table += [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
    ]
    model_routes: list[tuple[str, Endpoint, str]] = [
        ("", model_metadata, "GET"),
        ("/ready", model_ready, "GET"),
    ]
    for prefix in prefixes:
        table += [
            Route(prefix + suffix, fn, methods=[method]) for suffix, fn, method in model_routes
        ]
    return table


def infer_path_params(path: str) -> dict[str, str] | None:
    """The path parameters when ``path`` is an infer route, as the router would match them."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[len("/v2/models/") : -len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return {"model": parts[0]}
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return {"model": parts[0], "version": parts[2]}
    return None


class Infer:
    """``POST .../infer`` as a raw ASGI app (see the module docstring).

    It answers its own errors through the one REST renderer, as the app's handler
    does, so the app may call it without the router and the exception middleware
    in between. Unexpected errors are answered as
    ``InternalError`` and re-raised for the server to log, as Starlette does.
    """

    def __init__(self, dataplane: DataPlane, limit: int) -> None:
        self.dataplane = dataplane
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = json_length = cache_control = client_id = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = declared or value
            elif key == _BINARY_HEADER_KEY:
                json_length = json_length or value
            elif key == b"cache-control":
                cache_control = cache_control or value
            elif key == _REQUEST_ID_KEY:
                client_id = client_id or value
        request_id = client_id.decode("latin-1") if client_id else new_request_id()
        try:
            status, headers, payload = await self._answer(
                scope, receive, declared, json_length, cache_control, request_id
            )
        except ClientDisconnect:  # nobody left to answer, and nothing went wrong here
            logger.info("client went away before its request %s was read", request_id)
            return
        except Exception as exc:
            status, headers, payload = rest_error(exc, request_id)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            if not isinstance(exc, InferlineError):
                raise
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        declared: bytes | None,
        json_length: bytes | None,
        cache_control: bytes | None,
        request_id: str,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        params = scope["path_params"]
        # The model first, as Triton does: an unknown one is a 404 whatever the body.
        self.dataplane.check_model(
            params["model"], params.get("version"), protocol="rest", request_id=request_id
        )
        header_length = None
        if json_length is not None:
            if not json_length.isdigit():
                raise BadRequest(
                    f"{BINARY_HEADER} {json_length.decode('latin-1')!r} is not a number"
                )
            header_length = int(json_length)
        body = await self._body(receive, declared)
        settings = self.dataplane.settings
        infer_request = decode_request(
            body,
            header_length,
            max_tensors=settings.max_tensors,
            max_elements=settings.max_elements,
        )
        if cache_control is not None and b"no-cache" in cache_control:
            infer_request.parameters["cache"] = False
        response = await self.dataplane.infer(
            params["model"],
            params.get("version"),
            infer_request,
            protocol="rest",
            request_id=request_id,
        )
        payload, binary_length = encode_response(response, infer_request)
        headers = [
            (_REQUEST_ID_KEY, request_id.encode("latin-1")),
            (_VERSION_KEY, response.model_version.encode("latin-1")),
        ]
        if response.cache is not None:
            headers.append((_CACHE_KEY, response.cache.encode()))
        if binary_length is not None:
            headers.append((_BINARY_HEADER_KEY, str(binary_length).encode()))
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.append((b"content-type", _JSON_TYPE if binary_length is None else _BINARY_TYPE))
        return 200, headers, payload

    async def _body(self, receive: Receive, declared: bytes | None) -> bytes:
        """The body, refused with 413 as soon as it is known to pass the limit (as read_body)."""
        limit = self.limit
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(f"Content-Length {declared.decode('latin-1')!r} is not a number")
            if int(declared) > limit:
                raise PayloadTooLarge(
                    f"body of {declared.decode()} bytes is over the {limit}-byte limit"
                )
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            return body
        chunks, size = [body], len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _model_path(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["model"], params.get("version")
