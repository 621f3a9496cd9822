"""Monitoring over HTTP: ground-truth feedback, quality, drift and the drift report.

The windows live in the server process (or in Redis, shared by its workers, with
``monitoring.quality.store_url``), so ``inferline monitor`` reads them here.
Reports are computed on request, in a thread: statistics never hold the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from inferline.codecs import json_object
from inferline.dataplane import DataPlane
from inferline.errors import BadRequest, ModelNotFound
from inferline.monitoring.monitor import Monitor
from inferline.monitoring.report import render_html
from inferline.protocols.v2_rest import json_response, read_body
from inferline.registry.records import check_name

__all__ = ["routes"]

_SCALARS = (str, int, float, bool)


def routes(dataplane: DataPlane, monitor: Monitor) -> list[Route]:
    """``/api/v1/feedback`` and the per-model quality and drift routes."""

    async def feedback(request: Request) -> Response:
        """Send true values for answered requests, by request id (one or many)."""
        items = _feedback_items(await read_body(request, dataplane.settings.max_body_bytes))
        return json_response(request, await monitor.feedback(items))

    async def quality(request: Request) -> Response:
        """Quality figures per version, over the feedback window."""
        model, versions = _versions(request)
        reports = await asyncio.to_thread(
            lambda: [monitor.quality_report(model, v) for v in versions]
        )
        return json_response(request, {"model": model, "versions": reports})

    async def drift(request: Request) -> Response:
        """Drift per column and version against the reference profile, and skew."""
        model, versions = _versions(request)
        reports = await asyncio.to_thread(
            lambda: [monitor.drift_report(model, v) for v in versions]
        )
        return json_response(request, {"model": model, "versions": reports})

    async def drift_html(request: Request) -> Response:
        """The drift report as one self-contained HTML page with histograms."""
        model, versions = _versions(request)

        def build() -> str:
            return render_html(model, [monitor.drift_report(model, v) for v in versions])

        return HTMLResponse(await asyncio.to_thread(build))

    def _versions(request: Request) -> tuple[str, list[str]]:
        """The versions asked for: one (a number or an alias), else every one observed."""
        model = check_name(request.path_params["model"])
        wanted = request.query_params.get("version")
        known = monitor.versions(model)
        if wanted:
            if wanted in known:
                return model, [wanted]
            return model, [dataplane.resolve(model, wanted).model.version]
        if known:
            return model, known
        if model not in dataplane.model_names():
            raise ModelNotFound(f"model {model!r} not found")
        return model, dataplane.versions(model)

    return [
        Route("/api/v1/feedback", feedback, methods=["POST"]),
        Route("/api/v1/models/{model}/quality", quality, methods=["GET"]),
        Route("/api/v1/models/{model}/drift", drift, methods=["GET"]),
        Route("/api/v1/models/{model}/drift/report.html", drift_html, methods=["GET"]),
    ]


def _feedback_items(raw: bytes) -> list[tuple[str, Any]]:
    """``{"request_id", "truth"}`` or ``{"feedback": [...]}``; anything else is a 400."""
    body = json_object(raw, "feedback")
    if "feedback" in body:
        entries = body["feedback"]
        if not isinstance(entries, list) or not entries:
            raise BadRequest("'feedback' must be a non-empty list of {request_id, truth}")
    else:
        entries = [body]
    items = []
    for i, entry in enumerate(entries):
        where = f"feedback[{i}]" if "feedback" in body else "feedback"
        if not isinstance(entry, dict):
            raise BadRequest(f"{where} must be an object with 'request_id' and 'truth'")
        request_id, truth = entry.get("request_id"), entry.get("truth")
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest(f"{where}: 'request_id' must be a non-empty string")
        values = truth if isinstance(truth, list) else [truth]
        if not values or not all(isinstance(v, _SCALARS) for v in values):
            raise BadRequest(
                f"{where}: 'truth' must be a number, string or boolean, or a list of them"
            )
        items.append((request_id, truth))
    return items
