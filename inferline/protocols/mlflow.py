"""MLflow's scoring protocol, so clients of ``mlflow models serve`` work unchanged.

``POST /invocations`` takes JSON (``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs``, with optional ``params``) or ``text/csv`` and
answers ``{"predictions": …}`` shaped as MLflow shapes it: a list for one
array, a DataFrame's records, or an object of lists. With several models
served, ``/models/{name}[/versions/{v}]/invocations`` or the ``inferline-model``
header picks one. ``/ping``, ``/health`` and ``/version`` answer as MLflow does.
Errors are MLflow's ``{"error_code": "BAD_REQUEST", "message": …}``.

Values are converted once, by the model's signature, into the tensors
:meth:`DataPlane.infer` takes; no DataFrame is built here (the runtime builds
it when its model wants one).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, InvalidInput, ModelNotFound, UnsupportedMediaType
from inferline.protocols._tabular import (
    column_lists,
    csv_tensors,
    json_body,
    jsonable,
    named_tensors,
    records,
    respond,
    tensor,
)
from inferline.protocols.status import ERROR_SHAPE, REQUEST_ID_HEADER
from inferline.protocols.v2_rest import read_body
from inferline.settings import TensorSpec
from inferline.types import InferRequest, Tensor

__all__ = ["MODEL_HEADER", "error_shape", "routes"]

#: Request header naming the model when ``/invocations`` has several to choose from.
MODEL_HEADER = "inferline-model"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_JSON, _CSV = "application/json", "text/csv"

Endpoint = Callable[[Request], Awaitable[Response]]


def routes(dataplane: DataPlane) -> list[Route]:
    """``/invocations`` (plain, per model, per version), ``/ping``, ``/health``, ``/version``."""
    limit = dataplane.settings.max_body_bytes

    async def ping(request: Request) -> Response:
        status = 200 if dataplane.ready() else 503
        return Response("\n", status, media_type=_JSON)

    async def version(request: Request) -> Response:
        return Response(str(dataplane.server_metadata()["version"]), media_type=_JSON)

    async def invocations(request: Request) -> Response:
        name = request.path_params.get("model") or _only_model(request, dataplane)
        model = dataplane.resolve(name, request.path_params.get("version")).model
        media, problem = _media_type(request.headers.get("content-type"))
        if problem:
            raise UnsupportedMediaType(problem)
        body = await read_body(request, limit)
        if media == _CSV:
            inputs = csv_tensors(body, model.inputs)
        else:
            doc = json_body(body)
            inputs = _json_tensors(doc, model.inputs, getattr(model, "binary_columns", ()))
            _check_params(doc, name, getattr(model, "param_names", ()))
        response = await dataplane.infer(
            name,
            model.version,
            InferRequest(inputs=inputs),
            protocol="mlflow",
            request_id=request.headers.get(REQUEST_ID_HEADER, ""),
        )
        form = getattr(model, "predictions_form", None)
        binary_outputs = getattr(model, "binary_outputs", ())
        predictions = _predictions(response.outputs, form, binary_outputs)
        return respond(
            request,
            {"predictions": predictions},
            model_version=response.model_version,
            cache=response.cache,
        )

    invoke = _mlflow_errors(invocations)
    table = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
    for prefix in ("/models/{model}/versions/{version}", "/models/{model}", ""):
        table.append(Route(prefix + "/invocations", invoke, methods=["POST"]))
    return table


def _only_model(request: Request, dataplane: DataPlane) -> str:
    chosen = request.headers.get(MODEL_HEADER)
    if chosen:
        return chosen
    names = dataplane.model_names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise ModelNotFound("no model is being served")
    raise BadRequest(
        f"{len(names)} models are served ({', '.join(names)}): POST to "
        f"/models/<name>/invocations or name one in the {MODEL_HEADER} header"
    )


def _media_type(header: str | None) -> tuple[str, str]:
    """(media type, why it is refused or ""): JSON (the default) or CSV, in UTF-8."""
    media, _, rest = (header or _JSON).partition(";")
    media = media.strip().lower()
    if media not in (_JSON, _CSV):
        return media, f"content type must be {_JSON} or {_CSV}, not {media!r}"
    options = dict(part.strip().partition("=")[::2] for part in rest.split(";") if part.strip())
    charset = options.pop("charset", "utf-8").strip('"').lower()
    if charset not in ("utf-8", "utf8"):
        return media, f"only UTF-8 is accepted, not charset {charset}"
    if options:
        return media, (
            f"unrecognized content type parameters: {', '.join(options)}; since MLflow 2.0 "
            "the format goes in the JSON body, e.g. {'dataframe_split': ...}"
        )
    return media, ""


def _check_params(doc: dict[str, Any], name: str, declared: Sequence[str]) -> None:
    """``params``: ignored unless the model declares them, as MLflow does; refused if it does.

    The runtime contract has no per-request parameters yet, so a declared param
    would be silently left at its default: refusing says so instead.
    """
    params = doc.get("params")
    if params is None:
        return
    if not isinstance(params, dict):
        raise BadRequest("'params' must be a JSON object")
    passed = sorted(key for key in params if key in declared)
    if passed:
        raise BadRequest(
            f"model {name!r} declares params {', '.join(passed)}, which inferline cannot "
            "pass per request yet; leave them out to use the defaults in its signature"
        )


def _json_tensors(
    doc: dict[str, Any], specs: list[TensorSpec], binary: Collection[str] = ()
) -> list[Tensor]:
    found = [key for key in FORMATS if key in doc]
    if len(found) != 1:
        raise BadRequest(
            f"the JSON body must have exactly one of {', '.join(FORMATS)} (and optionally "
            f"params); it has: {', '.join(doc) or 'no keys'}"
        )
    key = found[0]
    value = doc[key]
    if key == "dataframe_split":
        return _from_base64(_frame_tensors(*_split(value), specs), binary)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest("'dataframe_records' must be a list of records (JSON objects)")
        columns = column_lists(value, "'dataframe_records'")
        names = list(columns)
        rows = [[record[n] for n in names] for record in value]
        return _from_base64(_frame_tensors(names, rows, specs), binary)
    if key == "instances" and (not isinstance(value, list) or not value):
        raise BadRequest("'instances' must be a non-empty list")
    if isinstance(value, dict):  # "inputs" as an object of named inputs
        return named_tensors(specs, value)
    if isinstance(value, list) and value and isinstance(value[0], dict):  # records
        return named_tensors(specs, column_lists(value, f"'{key}'"))
    return _unnamed(value, specs, key)


def _from_base64(tensors: list[Tensor], binary: Collection[str]) -> list[Tensor]:
    """Binary columns of a DataFrame body hold base64 text: decoded, as MLflow's
    ``cast_df_types_according_to_schema`` does (``base64.decodebytes``)."""
    for column in tensors:
        if column.name not in binary:
            continue
        decoded = np.empty(column.data.shape, dtype=object)
        flat = decoded.reshape(-1)
        for i, value in enumerate(column.data.reshape(-1)):
            try:
                flat[i] = base64.decodebytes(value)
            except binascii.Error as exc:
                raise InvalidInput(
                    f"column {column.name!r} is binary: row {i} is not base64 ({exc})"
                ) from exc
        column.data = decoded
    return tensors


def _split(value: Any) -> tuple[list[str] | None, list[Any]]:
    if not isinstance(value, dict):
        raise BadRequest("'dataframe_split' must be a JSON object with 'columns' and 'data'")
    extra = set(value) - {"columns", "data", "index"}
    rows, columns = value.get("data"), value.get("columns")
    if extra or not isinstance(rows, list):
        raise BadRequest(
            "'dataframe_split' needs a 'data' list of rows and optionally 'columns' and "
            f"'index'; it has: {', '.join(sorted(value)) or 'no keys'}"
        )
    if columns is not None and (
        not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
    ):
        raise BadRequest("'dataframe_split' 'columns' must be a list of strings")
    width = len(columns) if columns is not None else None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or (width is not None and len(row) != width):
            raise BadRequest(f"'dataframe_split' row {i} is not a list of {width} values")
    return columns, rows


def _frame_tensors(
    names: list[str] | None, rows: list[list[Any]], specs: list[TensorSpec]
) -> list[Tensor]:
    """A DataFrame's columns as the model's inputs: by name, or one matrix for a 2-D input."""
    matrix = len(specs) == 1 and len(specs[0].shape) >= 2
    if names is None or (matrix and specs[0].name not in names):
        return [tensor(specs[0], rows)] if matrix else _unnamed(rows, specs, "dataframe_split")
    columns = [list(col) for col in zip(*rows, strict=True)] or [[] for _ in names]
    return named_tensors(specs, dict(zip(names, columns, strict=True)))


def _unnamed(value: Any, specs: list[TensorSpec], key: str) -> list[Tensor]:
    """A value with no input names: the one input, or a table's columns by position."""
    if len(specs) == 1:
        return [tensor(specs[0], value)]
    width = len(specs)
    if (
        isinstance(value, list)
        and all(len(spec.shape) == 1 for spec in specs)
        and all(isinstance(row, list) and len(row) == width for row in value)
    ):
        columns = [list(col) for col in zip(*value, strict=True)] or [[] for _ in specs]
        return [tensor(spec, col) for spec, col in zip(specs, columns, strict=True)]
    names = ", ".join(spec.name for spec in specs)
    raise InvalidInput(
        f"'{key}' gives no input names, but the model takes {width} inputs ({names}): "
        "name them (records, columns or an object of inputs) or send rows of that many values"
    )


def _predictions(outputs: list[Tensor], form: str | None, binary: Collection[str] = ()) -> Any:
    """``predictions`` as ``mlflow models serve`` would write what the model returned.

    A runtime says what that was with a ``predictions_form`` attribute ("array",
    "records" or "dict"; the mlflow runtime sets it); otherwise one output is a
    list and several an object. Floats go out as float64, as MLflow's encoder
    writes them (a float32 0.1 is 0.10000000149011612, not 0.1). Outputs the
    model returns as ``bytes`` (the runtime's ``binary_outputs``) go out
    base64-encoded with ``base64.encodebytes``, as MLflow's encoder writes them.
    """
    outputs = [_as_base64(t) if t.name in binary else _wide(t) for t in outputs]
    if form == "records":
        return records(outputs)
    if len(outputs) == 1 and form in (None, "array"):
        return jsonable(outputs[0])
    return {t.name: jsonable(t) for t in outputs}


def _as_base64(tensor: Tensor) -> Tensor:
    encoded = np.empty(tensor.data.shape, dtype=object)
    flat = encoded.reshape(-1)
    for i, value in enumerate(tensor.data.reshape(-1)):
        raw = value if isinstance(value, bytes) else str(value).encode()
        flat[i] = base64.encodebytes(raw)
    return Tensor(tensor.name, "BYTES", tensor.shape, encoded)


def _wide(tensor: Tensor) -> Tensor:
    if tensor.datatype not in ("FP16", "FP32"):
        return tensor
    return Tensor(tensor.name, "FP64", tensor.shape, tensor.data.astype(np.float64))


def error_shape(path: str) -> str | None:
    """``"mlflow"`` for the paths whose errors take MLflow's shape (for answers given
    before routing, such as the guard's refusals), else None."""
    return "mlflow" if path.endswith("/invocations") else None


def _mlflow_errors(endpoint: Endpoint) -> Endpoint:
    """Mark the request for MLflow's error shape; the app's one renderer answers errors."""

    async def wrapped(request: Request) -> Response:
        request.scope[ERROR_SHAPE] = "mlflow"
        return await endpoint(request)

    return wrapped
