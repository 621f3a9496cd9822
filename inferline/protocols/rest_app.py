"""The ASGI application: every REST protocol's routes plus the one error handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, InferlineError, MethodNotAllowed, RouteNotFound
from inferline.lifecycle import RegistrySync
from inferline.monitoring.metrics import Metrics
from inferline.monitoring.monitor import Monitor
from inferline.protocols import management, mlflow, monitoring_api, openapi, tfserving, v2_rest
from inferline.protocols.status import (
    REQUEST_ID_HEADER,
    as_inferline_error,
    error_body,
    new_request_id,
)

logger = logging.getLogger(__name__)

__all__ = ["build_app"]

#: Scope key: the exception the error handler answered (and logged).
_ANSWERED = "inferline.answered"

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[Any]]


def build_app(
    dataplane: DataPlane,
    lifespan: Lifespan | None = None,
    sync: RegistrySync | None = None,
    metrics: Metrics | None = None,
    monitor: Monitor | None = None,
) -> Starlette:
    """One Starlette app; ``lifespan`` starts what the server owns (data plane, gRPC).

    ``sync`` (registry mode) enables the management API's registry routes;
    ``metrics`` the Prometheus ``/metrics`` route; ``monitor`` feedback, quality and drift.
    """
    app = _App(
        v2_rest.Infer(dataplane, dataplane.settings.max_body_bytes),
        routes=[
            *v2_rest.routes(dataplane),
            *mlflow.routes(dataplane),
            *tfserving.routes(dataplane),
            *openapi.routes(),
        ],
        exception_handlers={
            ClientDisconnect: _client_gone,
            InferlineError: _error_response,
            HTTPException: _http_error,
            Exception: _error_response,
        },
        lifespan=lifespan,
    )
    app.router.routes.extend(management.routes(dataplane, sync))
    if monitor is not None:
        app.router.routes.extend(monitoring_api.routes(dataplane, monitor))
    if metrics is not None:
        app.router.routes.append(Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]))
    return app


class _App(Starlette):
    """Starlette, with V2 infer requests handed straight to their handler.

    The router and the two exception middlewares cost some 7 us of a small
    inference's 100; :class:`v2_rest.Infer` answers its own errors the way they
    would. Anything else, and every request once user middleware is added,
    takes the usual path.
    """

    def __init__(self, infer: v2_rest.Infer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
        ):
            params = v2_rest.infer_path_params(scope["path"])
            if params is not None:
                scope["app"] = self
                scope["path_params"] = params
                await self._infer(scope, receive, send)
                return
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # Starlette re-raises what its 500 handler answered, for the server to log;
            # _error_response logged it already, under its request id.
            if scope.get(_ANSWERED) is not exc:
                raise


def _metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def scrape(_: Request) -> Response:
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return scrape


async def _error_response(request: Request, exc: Exception) -> Response:
    request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
    error = as_inferline_error(exc, request_id)
    request.scope[_ANSWERED] = exc
    headers = {REQUEST_ID_HEADER: request_id, **dict(error.headers)}
    return Response(error_body(error), error.http_status, headers, media_type="application/json")


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left before its request was read: nobody to answer, nothing to trace."""
    logger.info("client went away before its request to %s was read", request.url.path)
    return Response(status_code=400)  # never delivered; uvicorn drops it


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in our error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error: InferlineError
    if status == 404:
        error = RouteNotFound(f"no route for {request.method} {request.url.path}")
    elif status == 405:
        error = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
        # RFC 9110: a 405 names every method the resource supports, over all its routes.
        error.headers = (*error.headers, ("allow", _allowed(request)))
    else:
        error = BadRequest(str(getattr(exc, "detail", "bad request")))
    return await _error_response(request, error)


def _allowed(request: Request) -> str:
    """The methods of the path the router matched first, over every route on that path.

    Starlette names only the first route's methods; a path served by two routes
    (GET and DELETE of a version) has both.
    """
    methods: set[str] = set()
    matched = None
    for route in request.app.router.routes:
        if not (isinstance(route, Route) and route.path_regex.match(request.scope["path"])):
            continue
        matched = matched or route.path
        if route.path == matched and route.methods:
            methods |= route.methods
    return ", ".join(sorted(methods))
