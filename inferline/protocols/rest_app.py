"""The ASGI application: every REST protocol's routes plus the one error handler.

:func:`error_response` is the only thing that answers an error over REST: the
app registers it for :class:`InferlineError` and, as the fallback, for any other
exception (an ``InternalError`` carrying the request id, no traceback); the V2
infer fast path renders through the same :func:`~inferline.protocols.status.rest_error`.

The inference protocols' routes (V2, TF Serving, MLflow) are cancelled when
their client hangs up (on inferline's HTTP/1.1 transport, see
:data:`~inferline.transport.http1.CANCEL_ON_DISCONNECT`): the request leaves its
batching queue and stops holding a model slot. Management and monitoring routes
run to the end, so a change they began is never cut in half.
"""

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
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, InferlineError, MethodNotAllowed, RouteNotFound
from inferline.lifecycle import RegistrySync
from inferline.monitoring.metrics import Metrics
from inferline.monitoring.monitor import Monitor
from inferline.protocols import management, mlflow, monitoring_api, openapi, tfserving, v2_rest
from inferline.protocols.status import ERROR_SHAPE, REQUEST_ID_HEADER, new_request_id, rest_error
from inferline.security import Guard, rest_rule
from inferline.transport.http1 import CANCEL_ON_DISCONNECT

logger = logging.getLogger(__name__)

__all__ = ["build_app", "error_response"]

#: Scope key: the exception the error handler answered (and logged).
_ANSWERED = "inferline.answered"

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[Any]]


def build_app(
    dataplane: DataPlane,
    lifespan: Lifespan | None = None,
    sync: RegistrySync | None = None,
    metrics: Metrics | None = None,
    monitor: Monitor | None = None,
    guard: Guard | None = None,
) -> Starlette:
    """One Starlette app; ``lifespan`` starts what the server owns (data plane, gRPC).

    ``sync`` (registry mode) enables the management API's registry routes;
    ``metrics`` the Prometheus ``/metrics`` route; ``monitor`` feedback, quality and drift;
    ``guard`` checks every request's credentials, role and rate (the caller starts it).
    """
    app = _App(
        v2_rest.Infer(dataplane, dataplane.settings.max_body_bytes),
        guard,
        routes=[
            *_cancellable(v2_rest.routes(dataplane)),
            *_cancellable(mlflow.routes(dataplane)),
            *_cancellable(tfserving.routes(dataplane)),
            *openapi.routes(),
        ],
        exception_handlers={
            ClientDisconnect: _client_gone,
            InferlineError: error_response,
            HTTPException: _http_error,
            Exception: error_response,
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

    def __init__(self, infer: v2_rest.Infer, guard: Guard | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infer = infer
        self._guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = self._guard
        if (
            guard is not None
            and not guard.idle
            and scope["type"] == "http"
            and not await _admit(guard, scope, receive, send)
        ):
            return
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
                scope[CANCEL_ON_DISCONNECT] = True
                await self._infer(scope, receive, send)
                return
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # Starlette re-raises what its 500 handler answered, for the server to log;
            # error_response logged it already, under its request id.
            if scope.get(_ANSWERED) is not exc:
                raise


async def _admit(guard: Guard, scope: Scope, receive: Receive, send: Send) -> bool:
    """The policy check of one request; False when it was refused (and answered)."""
    method, path = scope["method"], scope["path"]
    rule, model = rest_rule(method, path)
    authorization = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            authorization = value.decode("latin-1")
            break
    client = scope.get("client")
    try:
        principal = await guard.check(
            rule,
            model,
            authorization,
            client[0] if client else "unknown",
            "rest",
            f"{method} {path}",
        )
    except InferlineError as exc:
        shape = mlflow.error_shape(path)
        if shape is not None:
            scope[ERROR_SHAPE] = shape  # refused before routing: in the route's own shape
        response = await error_response(Request(scope), exc)
        await response(scope, receive, send)
        return False
    scope.setdefault("state", {})["principal"] = principal
    return True


def _metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def scrape(_: Request) -> Response:
        body = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return scrape


def _cancellable(routes: list[Route]) -> list[BaseRoute]:
    """``routes`` marked to be cancelled when their client hangs up."""
    for route in routes:
        route.app = _cancel_on_disconnect(route.app)
    return list(routes)


def _cancel_on_disconnect(app: ASGIApp) -> ASGIApp:
    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        scope[CANCEL_ON_DISCONNECT] = True
        await app(scope, receive, send)

    return marked


async def error_response(request: Request, exc: Exception) -> Response:
    """The one REST error handler: any exception, in the shape of the route's family."""
    request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
    request.scope[_ANSWERED] = exc  # logged by rest_error: the server need not log it again
    status, headers, body = rest_error(exc, request_id, request.scope.get(ERROR_SHAPE))
    response = Response(body, status)
    response.raw_headers = headers
    return response


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
    return await error_response(request, error)


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
