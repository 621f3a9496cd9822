"""The Open Inference Protocol (V2) over HTTP: JSON tensors and binary data.

Handlers are plain Starlette endpoints: parse, call the data plane, encode. No
per-request pydantic model; errors travel as InferlineError to the one handler
in :mod:`inferline.protocols.rest_app`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.codecs import decode_request, encode_response
from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, PayloadTooLarge
from inferline.protocols.status import MODEL_VERSION_HEADER, REQUEST_ID_HEADER, new_request_id

__all__ = ["BINARY_HEADER", "json_response", "read_body", "routes"]

BINARY_HEADER = "inference-header-content-length"
_JSON = "application/json"
_BINARY = "application/octet-stream"

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(request: Request, payload: Any, status: int = 200) -> Response:
    headers = {REQUEST_ID_HEADER: request.headers.get(REQUEST_ID_HEADER) or new_request_id()}
    return Response(orjson.dumps(payload), status, headers, media_type=_JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
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
        is_ready = dataplane.ready()
        return json_response(request, {"ready": is_ready}, 200 if is_ready else 503)

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

    async def infer(request: Request) -> Response:
        name, version = _model_path(request)
        header_length = request.headers.get(BINARY_HEADER)
        json_length = None
        if header_length is not None:
            if not header_length.isdigit():
                raise BadRequest(f"{BINARY_HEADER} {header_length!r} is not a number")
            json_length = int(header_length)
        body = await read_body(request, limit)
        infer_request = decode_request(body, json_length)
        if "no-cache" in request.headers.get("cache-control", ""):
            infer_request.parameters["cache"] = False
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        response = await dataplane.infer(
            name, version, infer_request, protocol="rest", request_id=request_id
        )
        payload, binary_length = encode_response(response, infer_request)
        headers = {REQUEST_ID_HEADER: request_id, MODEL_VERSION_HEADER: response.model_version}
        if binary_length is None:
            return Response(payload, 200, headers, media_type=_JSON)
        headers[BINARY_HEADER] = str(binary_length)
        return Response(payload, 200, headers, media_type=_BINARY)

    table: list[Route] = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
    ]
    model_routes: list[tuple[str, Endpoint, str]] = [
        ("", model_metadata, "GET"),
        ("/ready", model_ready, "GET"),
        ("/infer", infer, "POST"),
    ]
    for prefix in ("/v2/models/{model}/versions/{version}", "/v2/models/{model}"):
        table += [
            Route(prefix + suffix, fn, methods=[method]) for suffix, fn, method in model_routes
        ]
    return table


def _model_path(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["model"], params.get("version")
