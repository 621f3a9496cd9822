"""OpenAPI for every REST route: ``/openapi.json``, and ``/docs`` to read it.

The document is a plain dict built once, on the first request, from a table of
the inference and health routes (request and response bodies included) and
the app's own route list, so a route added elsewhere (the management API) is
listed too, with its docstring as summary. The hot routes are described here
and never validated against it: a request costs the same with or without docs.

It is OpenAPI 3.0.3, the newest version the Swagger UI in ``swagger-ui-bundle``
(4.15) renders. ``/docs`` serves that Swagger UI from the installed wheel (the
``docs`` extra), so no CDN is needed; without it, ``/docs`` is a plain list.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from inferline._version import __version__
from inferline.protocols._tabular import respond
from inferline.types import DATATYPES

__all__ = ["build_document", "openapi_path", "routes"]

OPENAPI_VERSION = "3.0.3"
STATIC_PREFIX = "/docs/static"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Iterable[str] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_ANY: dict[str, Any] = {}
_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_PARAMS = {"type": "object", "additionalProperties": True}
_SHAPE = {"type": "array", "items": _INT}
_TENSOR_META = _obj(
    ["name", "datatype", "shape"],
    name=_STR,
    datatype={"type": "string", "enum": list(DATATYPES)},
    shape=_SHAPE,
)
_TENSOR = _obj(
    ["name", "datatype", "shape"],
    name=_STR,
    datatype={"type": "string", "enum": list(DATATYPES)},
    shape=_SHAPE,
    parameters=_PARAMS,
    data={"description": "Row-major values, flat or nested; absent with binary data."},
)

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=_STR),
    "V2Live": _obj(["live"], live=_BOOL),
    "V2Ready": _obj(["ready"], ready=_BOOL),
    "V2ModelReady": _obj(["name", "ready"], name=_STR, ready=_BOOL),
    "V2ServerMetadata": _obj(
        ["name", "version"], name=_STR, version=_STR, extensions={"type": "array", "items": _STR}
    ),
    "V2ModelMetadata": _obj(
        ["name", "inputs", "outputs"],
        name=_STR,
        versions={"type": "array", "items": _STR},
        platform=_STR,
        inputs={"type": "array", "items": _TENSOR_META},
        outputs={"type": "array", "items": _TENSOR_META},
    ),
    "V2InferRequest": _obj(
        ["inputs"],
        id=_STR,
        parameters=_PARAMS,
        inputs={"type": "array", "items": _TENSOR, "minItems": 1},
        outputs={"type": "array", "items": _obj(["name"], name=_STR, parameters=_PARAMS)},
    ),
    "V2InferResponse": _obj(
        ["model_name", "outputs"],
        model_name=_STR,
        model_version=_STR,
        id=_STR,
        parameters=_PARAMS,
        outputs={"type": "array", "items": _TENSOR},
    ),
    "MlflowRequest": {
        **_obj(
            dataframe_split=_obj(
                ["data"],
                columns={"type": "array", "items": _STR},
                data={"type": "array", "items": {"type": "array", "items": _ANY}},
                index={"type": "array", "items": _ANY},
            ),
            dataframe_records={"type": "array", "items": _PARAMS},
            instances={"type": "array", "items": _ANY},
            inputs={"description": "One tensor (a list) or an object of named inputs."},
            params=_PARAMS,
        ),
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs.",
    },
    "MlflowPredictions": _obj(["predictions"], predictions=_ANY),
    "MlflowError": _obj(["error_code", "message"], error_code=_STR, message=_STR),
    "TfsPredictRequest": {
        **_obj(
            signature_name={"type": "string", "default": "serving_default"},
            instances={"type": "array", "items": _ANY, "description": "Row format."},
            inputs={"description": "Columnar format: one tensor or an object of them."},
        ),
        "description": "Exactly one of instances (rows) or inputs (columns).",
    },
    "TfsPredictResponse": _obj(
        predictions={"type": "array", "items": _ANY, "description": "Answer to instances."},
        outputs={"description": "Answer to inputs."},
    ),
    "TfsModelStatus": _obj(
        ["model_version_status"],
        model_version_status={
            "type": "array",
            "items": _obj(
                ["version", "state", "status"],
                version=_STR,
                state=_STR,
                status=_obj(error_code=_STR, error_message=_STR),
            ),
        },
        name=_STR,
        ready=_BOOL,
    ),
    "TfsModelList": _obj(["models"], models={"type": "array", "items": _STR}),
}

_V2 = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
_TFS = ("/v1/models/{model}", "/v1/models/{model}/versions/{version}")
_MLFLOW = ("", "/models/{model}", "/models/{model}/versions/{version}")
_INVOKE = [p + "/invocations" for p in _MLFLOW]
_PREDICT = [p + ":predict" for p in _TFS]

#: The order Swagger UI shows the groups in.
TAGS = ("V2", "MLflow", "TF Serving", "Management", "Other", "Docs")

#: (method, paths, tag, summary, request schema, response schema: "" for plain text)
Operation = tuple[str, Iterable[str], str, str, str | None, str]
OPERATIONS: list[Operation] = [
    ("get", ["/v2/health/live"], "V2", "Server liveness", None, "V2Live"),
    ("get", ["/v2/health/ready"], "V2", "Readiness: 503 until loaded", None, "V2Ready"),
    ("get", ["/v2"], "V2", "Server metadata", None, "V2ServerMetadata"),
    ("get", _V2, "V2", "Model metadata", None, "V2ModelMetadata"),
    ("get", [p + "/ready" for p in _V2], "V2", "Model readiness", None, "V2ModelReady"),
    ("post", [p + "/infer" for p in _V2], "V2", "Inference", "V2InferRequest", "V2InferResponse"),
    ("post", _INVOKE, "MLflow", "MLflow scoring", "MlflowRequest", "MlflowPredictions"),
    ("get", ["/ping", "/health"], "MLflow", "Health, as mlflow models serve answers it", None, ""),
    ("get", ["/version"], "MLflow", "Server version", None, ""),
    ("post", _PREDICT, "TF Serving", "Predict", "TfsPredictRequest", "TfsPredictResponse"),
    ("get", _TFS, "TF Serving", "Model version status", None, "TfsModelStatus"),
    ("get", ["/v1/models"], "TF Serving", "List models (KServe V1)", None, "TfsModelList"),
    ("get", ["/openapi.json"], "Docs", "This document", None, ""),
    ("get", ["/docs"], "Docs", "Interactive API docs", None, ""),
]  # fmt: skip


def _operation(
    path: str, tag: str, summary: str, request: str | None, answer: str
) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag], "summary": summary}
    params = re.findall(r"{(\w+)}", path)
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": _STR} for p in params
        ]
    if request:
        content: dict[str, Any] = {"application/json": {"schema": _ref(request)}}
        if request == "MlflowRequest":  # and MLflow's own error shape
            content["text/csv"] = {"schema": {"type": "string", "description": "Header row first."}}
        op["requestBody"] = {"required": True, "content": content}
    ok = (
        {"application/json": {"schema": _ref(answer)}}
        if answer
        else {"text/plain": {"schema": _STR}}
    )
    op["responses"] = {
        "200": {"description": "Success", "content": ok},
        "default": {
            "description": "Error",
            "content": {"application/json": {"schema": _ref(_error_schema(request))}},
        },
    }
    return op


def _error_schema(request: str | None) -> str:
    return "MlflowError" if request == "MlflowRequest" else "Error"


def build_document(app_routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    """The OpenAPI document: the table above, plus any other route of the app."""
    paths: dict[str, dict[str, Any]] = {}
    for method, op_paths, tag, summary, request, answer in OPERATIONS:
        for path in op_paths:
            paths.setdefault(path, {})[method] = _operation(path, tag, summary, request, answer)
    for route in app_routes:
        for path, method, summary in _described(route):
            if method not in paths.get(path, {}):
                tag = "Management" if path.startswith(("/api/", "/v2/repository")) else "Other"
                paths.setdefault(path, {})[method] = _operation(path, tag, summary, None, "")
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
