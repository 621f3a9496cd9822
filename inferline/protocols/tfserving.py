"""TF-Serving's REST API (KServe's V1 protocol), so their clients work unchanged.

``POST /v1/models/{m}[/versions/{v}]:predict`` takes the row format
(``{"instances": [...]}``: one value per row for a one-input model, or one
object of named inputs per row) or the columnar format (``{"inputs": value}``
or ``{"inputs": {name: value}}``), and answers as TF Serving does: rows in
``predictions`` (one value per row, or one object per row when the model has
several outputs), columns in ``outputs``. BYTES travel as strings or
``{"b64": "..."}`` objects. ``GET /v1/models/{m}[/versions/{v}]`` reports
version status (plus KServe V1's ``name``/``ready``); ``GET /v1/models`` lists
the models as KServe V1 does. ``:classify`` and ``:regress`` (TF Serving's
tf.Example APIs) answer 501 saying to use ``:predict``. Errors are
``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, NotImplementedByServer
from inferline.protocols._tabular import (
    column_lists,
    json_body,
    jsonable,
    named_tensors,
    records,
    respond,
    tensor,
)
from inferline.protocols.status import REQUEST_ID_HEADER
from inferline.protocols.v2_rest import read_body
from inferline.settings import TensorSpec
from inferline.types import InferRequest, Tensor

__all__ = ["routes"]

DEFAULT_SIGNATURE = "serving_default"


def routes(dataplane: DataPlane) -> list[Route]:
    """Predict and status routes, versioned and unversioned, from one table."""
    limit = dataplane.settings.max_body_bytes

    async def predict(request: Request) -> Response:
        name, version = _model_path(request)
        model = dataplane.resolve(name, version).model
        doc = json_body(await read_body(request, limit))
        signature = doc.get("signature_name", DEFAULT_SIGNATURE)
        if signature != DEFAULT_SIGNATURE:
            raise BadRequest(
                f"signature_name {signature!r} is not served; models have one signature, "
                f"{DEFAULT_SIGNATURE!r}"
            )
        rows = "instances" in doc
        if rows == ("inputs" in doc):
            raise BadRequest(
                'the body needs exactly one of "instances" (row format) or "inputs" '
                "(columnar format)"
            )
        if rows:
            inputs = _row_tensors(doc["instances"], model.inputs)
        else:
            inputs = _column_tensors(doc["inputs"], model.inputs)
        response = await dataplane.infer(
            name,
            model.version,
            InferRequest(inputs=inputs),
            protocol="tfserving",
            request_id=request.headers.get(REQUEST_ID_HEADER, ""),
        )
        outputs = response.outputs
        payload: dict[str, Any]
        if rows:
            payload = {
                "predictions": jsonable(outputs[0]) if len(outputs) == 1 else records(outputs)
            }
        else:
            single = len(outputs) == 1
            payload = {"outputs": jsonable(outputs[0]) if single else _by_name(outputs)}
        return respond(request, payload, model_version=response.model_version, cache=response.cache)

    async def not_served(request: Request) -> Response:
        name, version = _model_path(request)
        dataplane.resolve(name, version)  # an unknown model is a 404 first
        verb = request.url.path.rpartition(":")[2]
        raise NotImplementedByServer(
            f":{verb} is not served: TF Serving answers it only for models exported with a "
            f"{verb} signature over tf.Example; inferline models have one signature, "
            f"{DEFAULT_SIGNATURE!r}: POST the same inputs to :predict"
        )

    async def status(request: Request) -> Response:
        name, version = _model_path(request)
        versions = [version] if version else dataplane.versions(name)
        entries = [_version_status(v, dataplane.model_ready(name, v)) for v in versions]
        ready = all(entry["state"] == "AVAILABLE" for entry in entries)
        return respond(request, {"model_version_status": entries, "name": name, "ready": ready})

    async def list_models(request: Request) -> Response:
        return respond(request, {"models": dataplane.model_names()})

    # Errors are TF Serving's {"error": ...}: the app's one renderer answers them.
    table = [Route("/v1/models", list_models, methods=["GET"])]
    for prefix in ("/v1/models/{model}/versions/{version}", "/v1/models/{model}"):
        table.append(Route(prefix + ":predict", predict, methods=["POST"]))
        for verb in (":classify", ":regress"):
            table.append(Route(prefix + verb, not_served, methods=["POST"]))
        table.append(Route(prefix, status, methods=["GET"]))
    return table


def _model_path(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["model"], params.get("version")


def _version_status(version: str, ready: bool) -> dict[str, Any]:
    return {
        "version": version,
        "state": "AVAILABLE" if ready else "LOADING",
        "status": {"error_code": "OK", "error_message": ""},
    }


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == ["b64"]


def _row_tensors(instances: Any, specs: list[TensorSpec]) -> list[Tensor]:
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list, one entry per row')
    first = instances[0]
    if isinstance(first, dict) and not _is_b64(first):
        return named_tensors(specs, column_lists(instances, '"instances"'), b64=True)
    if len(specs) == 1:
        return [tensor(specs[0], instances, b64=True)]
    raise BadRequest(_needs_names(specs, "each instance must be an object naming them"))


def _column_tensors(inputs: Any, specs: list[TensorSpec]) -> list[Tensor]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return named_tensors(specs, inputs, b64=True)
    if len(specs) == 1:
        return [tensor(specs[0], inputs, b64=True)]
    raise BadRequest(_needs_names(specs, '"inputs" must be an object naming them'))


def _needs_names(specs: list[TensorSpec], what: str) -> str:
    names = ", ".join(spec.name for spec in specs)
    return f"the model takes {len(specs)} inputs ({names}): {what}"


def _by_name(outputs: list[Tensor]) -> dict[str, Any]:
    return {t.name: jsonable(t) for t in outputs}
