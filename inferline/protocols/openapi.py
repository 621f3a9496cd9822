"""OpenAPI for every REST route: ``/openapi.json``, and ``/docs`` to read it.

The document is a plain dict built once, on the first request, from the app's
own route list and :data:`OPERATIONS`, a table that says for every operation
what it takes (path and query parameters with the patterns the server checks,
request bodies and their media types) and what it answers, per status, in which
media type. A route the table does not know (one a user added) is listed with
its docstring as summary and an answer of any type. Requests are never
validated against the document: a request costs the same with or without docs.
``tests/protocols/test_openapi_conformance.py`` runs schemathesis over every
operation to keep the document and the server in step.

It is OpenAPI 3.0.3, the newest version the Swagger UI in ``swagger-ui-bundle``
(4.15) renders. ``/docs`` serves that Swagger UI from the installed wheel (the
``docs`` extra), so no CDN is needed; without it, ``/docs`` is a plain list.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from inferline._version import __version__
from inferline.protocols._openapi_schemas import (
    ALIAS_PARAM,
    NAME_PARAM,
    NUMBER_PARAM,
    REF_PARAM,
    REGISTER_QUERY,
    SCHEMAS,
    STR,
    VERSION_QUERY,
    Content,
    ref,
)
from inferline.protocols._tabular import respond

__all__ = ["build_document", "openapi_path", "routes"]

OPENAPI_VERSION = "3.0.3"
STATIC_PREFIX = "/docs/static"


_V2 = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
_TFS = ("/v1/models/{model}", "/v1/models/{model}/versions/{version}")
_MLFLOW = ("", "/models/{model}", "/models/{model}/versions/{version}")
_INVOKE = [p + "/invocations" for p in _MLFLOW]
_PREDICT = [p + ":predict" for p in _TFS]
_API = "/api/v1/models/{model}"

#: The order Swagger UI shows the groups in.
TAGS = ("V2", "MLflow", "TF Serving", "Management", "Monitoring", "Other", "Docs")


def _json(schema: str) -> Content:
    return {"application/json": {"schema": ref(schema)}}


_HTML: Content = {"text/html": {"schema": STR}}
_TEXT: Content = {"text/plain": {"schema": STR}}
#: MLflow's /ping and /version: ``application/json`` over a body that is not JSON.
_MLFLOW_TEXT: Content = {"application/json": {}}
_FILES: Content = {"*/*": {}}
_ARTIFACT: Content = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
}


@dataclass(frozen=True)
class Op:
    """One operation on one or more paths: what it takes and what it answers per status."""

    method: str
    paths: Iterable[str]
    tag: str
    summary: str
    answers: dict[str, Content]
    request: Content | None = None
    request_required: bool = True
    #: Path parameters whose values the server checks (others are any string).
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    query: tuple[dict[str, Any], ...] = ()
    error: str = "Error"


_CHECKED = {"model": NAME_PARAM}
_RATED = {"200": _json("V2Ready"), "503": _json("V2Ready")}
OPERATIONS: list[Op] = [
    Op("get", ["/v2/health/live"], "V2", "Server liveness", {"200": _json("V2Live")}),
    Op("get", ["/v2/health/ready"], "V2", "Readiness: 503 until loaded", _RATED),
    Op("get", ["/v2"], "V2", "Server metadata", {"200": _json("V2ServerMetadata")}),
    Op("get", _V2, "V2", "Model metadata", {"200": _json("V2ModelMetadata")}),
    Op("get", [p + "/ready" for p in _V2], "V2", "Model readiness",
       {"200": _json("V2ModelReady"), "503": _json("V2ModelReady")}),
    Op("post", [p + "/infer" for p in _V2], "V2", "Inference", {"200": _json("V2InferResponse")},
       _json("V2InferRequest")),
    Op("post", _INVOKE, "MLflow", "MLflow scoring", {"200": _json("MlflowPredictions")},
       {**_json("MlflowRequest"), "text/csv": {"schema": {"type": "string", "minLength": 1,
                                                          "description": "Header row first."}}},
       error="MlflowError"),
    Op("get", ["/ping", "/health"], "MLflow", "Health, as mlflow models serve answers it",
       {"200": _MLFLOW_TEXT, "503": _MLFLOW_TEXT}),
    Op("get", ["/version"], "MLflow", "Server version (the bare version text)",
       {"200": _MLFLOW_TEXT}),
    Op("post", _PREDICT, "TF Serving", "Predict", {"200": _json("TfsPredictResponse")},
       _json("TfsPredictRequest")),
    Op("post", [p + verb for p in _TFS for verb in (":classify", ":regress")], "TF Serving",
       "Classify and regress: not served (501 naming :predict)", {"501": _json("Error")},
       {"application/json": {}}, request_required=False),
    Op("get", _TFS, "TF Serving", "Model version status", {"200": _json("TfsModelStatus")}),
    Op("get", ["/v1/models"], "TF Serving", "List models (KServe V1)",
       {"200": _json("TfsModelList")}),
    Op("post", ["/v2/repository/index"], "Management", "Models in the repository and their state",
       {"200": _json("RepositoryIndex")}),
    Op("post", ["/v2/repository/models/{model}/load"], "Management", "Serve a model",
       {"200": _json("RepositoryState")}, params=_CHECKED),
    Op("post", ["/v2/repository/models/{model}/unload"], "Management", "Stop serving a model",
       {"200": _json("RepositoryState")}, params=_CHECKED),
    Op("get", ["/api/v1/models"], "Management", "Registered models",
       {"200": _json("ModelSummaries")}),
    Op("get", [_API], "Management", "A model and its versions", {"200": _json("ModelDetail")},
       params=_CHECKED),
    Op("post", [_API + "/versions"], "Management", "Register a version (the artifact is the body)",
       {"201": _json("ModelVersion")}, _ARTIFACT, params=_CHECKED, query=REGISTER_QUERY),
    Op("get", [_API + "/versions/{version}"], "Management", "A version, by number or alias",
       {"200": _json("ModelVersion")}, params={**_CHECKED, "version": REF_PARAM}),
    Op("delete", [_API + "/versions/{version}"], "Management", "Delete a version",
       {"200": _json("Deleted")}, params={**_CHECKED, "version": NUMBER_PARAM}),
    Op("put", [_API + "/aliases/{alias}"], "Management", "Point an alias at a version",
       {"200": _json("AliasMoved")}, _json("AliasChange"),
       params={**_CHECKED, "alias": ALIAS_PARAM}),
    Op("post", [_API + "/promote"], "Management", "Point an alias (production) at a version",
       {"200": _json("AliasMoved")}, _json("AliasChange"), params=_CHECKED),
    Op("post", [_API + "/rollback"], "Management", "Move an alias back to its previous version",
       {"200": _json("RolledBack")}, _json("Rollback"), request_required=False, params=_CHECKED),
    Op("get", [_API + "/audit", "/api/v1/audit"], "Management", "Audit log, newest last",
       {"200": _json("Audit")}, params=_CHECKED),
    Op("post", ["/api/v1/feedback"], "Monitoring", "True values for answered requests",
       {"200": _json("FeedbackResult")}, _json("Feedback")),
    Op("get", [_API + "/quality"], "Monitoring", "Quality per version, over the feedback window",
       {"200": _json("VersionReports")}, params=_CHECKED, query=(VERSION_QUERY,)),
    Op("get", [_API + "/drift"], "Monitoring", "Drift and skew per column and version",
       {"200": _json("VersionReports")}, params=_CHECKED, query=(VERSION_QUERY,)),
    Op("get", [_API + "/drift/report.html"], "Monitoring", "The drift report as one HTML page",
       {"200": _HTML}, params=_CHECKED, query=(VERSION_QUERY,)),
    Op("get", ["/metrics"], "Other", "Prometheus metrics (text exposition format)",
       {"200": _TEXT}),
    Op("get", ["/openapi.json"], "Docs", "This document", {"200": _json("OpenAPI")}),
    Op("get", ["/docs"], "Docs", "Interactive API docs", {"200": _HTML}),
    Op("get", [STATIC_PREFIX + "/{path}"], "Docs", "Swagger UI's files", {"200": _FILES}),
]  # fmt: skip


def _operation(path: str, op: Op) -> dict[str, Any]:
    doc: dict[str, Any] = {"tags": [op.tag], "summary": op.summary}
    params = [
        {"name": p, "in": "path", "required": True, "schema": op.params.get(p, STR)}
        for p in re.findall(r"{(\w+)}", path)
    ]
    if params or op.query:
        doc["parameters"] = [*params, *op.query]
    if op.request:
        doc["requestBody"] = {"required": op.request_required, "content": op.request}
    doc["responses"] = {
        **{status: {"description": _STATUS.get(status, "Success"), "content": content}
           for status, content in op.answers.items()},
        "default": {"description": "Error", "content": _json(op.error)},
    }  # fmt: skip
    return doc


_STATUS = {"201": "Created", "503": "Not ready"}


def build_document(app_routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    """The OpenAPI document: the table above, for the routes the app has.

    A route the table does not know (one a user added) is listed with its
    docstring as summary and an answer of any type.
    """
    table = {(path, op.method): op for op in OPERATIONS for path in op.paths}
    paths: dict[str, dict[str, Any]] = {}
    for route in app_routes:
        for path, method, summary in _described(route):
            op = table.get((path, method)) or Op(method, [path], "Other", summary, {"200": _FILES})
            paths.setdefault(path, {})[method] = _operation(path, op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "inferline", "version": __version__},
        "tags": [{"name": tag} for tag in TAGS],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": SCHEMAS},
    }


def openapi_path(path: str) -> str:
    """A Starlette path in OpenAPI's form: ``{name:converter}`` becomes ``{name}``."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


def _described(route: BaseRoute) -> Iterable[tuple[str, str, str]]:
    if isinstance(route, Route):
        doc = (getattr(route.endpoint, "__doc__", None) or "").strip().split("\n")[0]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            yield openapi_path(route.path), method.lower(), doc or f"{method} {route.path}"
    elif isinstance(route, Mount):
        yield openapi_path(route.path) + "/{path}", "get", f"Files under {route.path}"


def routes() -> list[BaseRoute]:
    """``/openapi.json``, ``/docs`` and, with the ``docs`` extra, Swagger UI's files."""
    document: dict[str, Any] = {}
    swagger = _swagger_dir()

    async def openapi_json(request: Request) -> Response:
        if not document:
            document.update(build_document(request.app.routes))
        return respond(request, document)

    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        if swagger is not None:
            return HTMLResponse(_SWAGGER_PAGE.format(root=html.escape(root)))
        if not document:
            document.update(build_document(request.app.routes))
        return HTMLResponse(_plain_page(document, root))

    table: list[BaseRoute] = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    if swagger is not None:
        table.append(Mount(STATIC_PREFIX, StaticFiles(directory=swagger)))
    return table


def _swagger_dir() -> str | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return str(swagger_ui_path)


_SWAGGER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>inferline API</title>
<link rel="stylesheet" href="{root}/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{root}/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "{root}/openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>
"""


def _plain_page(document: dict[str, Any], root: str) -> str:
    rows = [
        f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(op.get('summary', ''))}</td></tr>"
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    ]
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>inferline API</title></head>'
        f'<body><h1>inferline API</h1><p><a href="{html.escape(root)}/openapi.json">'
        "openapi.json</a> (pip install 'inferline[docs]' for Swagger UI)</p>"
        f"<table>{''.join(rows)}</table></body></html>"
    )
