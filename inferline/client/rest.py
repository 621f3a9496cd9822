"""The V2 REST transport: httpx with pooled HTTP/1.1 keep-alive connections.

Numeric inputs go as binary data after the JSON header (the binary-tensor
extension, ``Inference-Header-Content-Length``); BYTES inputs go as JSON strings,
or as raw binary when an element is not UTF-8. Every output is asked for as
binary data, so it comes back without a JSON round trip.

Failures to connect, and a connection closed before any answer (what gRPC
reports as UNAVAILABLE), raise :class:`EndpointUnreachable`; an error answer raises
the inferline error its status stands for.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from inferline.client._errors import from_http
from inferline.client._tensors import InferResult, Input, from_list, from_raw, to_raw
from inferline.errors import DeadlineExceeded, EndpointUnreachable, InternalError

__all__ = ["RestTransport"]

_BINARY_HEADER = "inference-header-content-length"
_REQUEST_ID = "x-request-id"
_VARIANT = "x-inferline-variant"


class RestTransport:
    """One ``http://`` or ``https://`` endpoint."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        tls: ssl.SSLContext | None,
        max_connections: int = 100,
    ) -> None:
        self.url = url
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=dict(headers),
            verify=tls if tls is not None else True,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=None,
        )

    async def infer(
        self,
        model: str,
        version: str | None,
        inputs: list[Input],
        parameters: Mapping[str, Any] | None,
        request_id: str | None,
        outputs: list[str] | None,
        budget: float,
    ) -> InferResult:
        tensors, chunks = [], []
        for item in inputs:
            entry: dict[str, Any] = {"name": item.name, "datatype": item.datatype}
            entry["shape"] = item.shape
            text = _as_text(item) if item.datatype == "BYTES" else None
            if text is not None:
                entry["data"] = text
            else:
                raw = to_raw(item)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            tensors.append(entry)
        doc: dict[str, Any] = {
            "inputs": tensors,
            "parameters": {**(parameters or {}), "binary_data_output": True},
        }
        if request_id is not None:
            doc["id"] = request_id
        if outputs is not None:
            doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
        header = orjson.dumps(doc)
        headers = {_BINARY_HEADER: str(len(header)), "content-type": "application/octet-stream"}
        if request_id is not None:
            headers[_REQUEST_ID] = request_id
        path = _model_path(model, version) + "/infer"
        response = await self._send("POST", path, budget, b"".join([header, *chunks]), headers)
        return self._result(response)

    async def ready(self, model: str, version: str | None, budget: float) -> bool:
        response = await self._send("GET", _model_path(model, version) + "/ready", budget)
        return response.status_code == 200

    async def metadata(self, model: str, version: str | None, budget: float) -> dict[str, Any]:
        response = await self._send("GET", _model_path(model, version), budget)
        return _json(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        budget: float,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, path, content=body, headers=headers, timeout=budget
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointUnreachable(f"{self.url}: cannot connect ({exc})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise EndpointUnreachable(
                f"{self.url}: connection lost before an answer ({exc})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"{self.url}: no answer within {budget:.3g} s") from exc
        if response.status_code >= 400 and not (
            response.status_code == 503 and path.endswith("/ready")
        ):
            raise from_http(
                response.status_code, _error_message(response), response.headers.get("retry-after")
            )
        return response

    def _result(self, response: httpx.Response) -> InferResult:
        body = response.content
        length = response.headers.get(_BINARY_HEADER)
        split = int(length) if length is not None and length.isdigit() else len(body)
        if split > len(body):
            raise InternalError(f"{self.url}: {_BINARY_HEADER} runs past the body")
        doc, binary, offset = _json(body[:split]), memoryview(body)[split:], 0
        outputs = {}
        for entry in doc.get("outputs") or ():
            name, datatype, shape = entry["name"], entry["datatype"], entry["shape"]
            size = (entry.get("parameters") or {}).get("binary_data_size")
            if size is None:
                outputs[name] = from_list(name, datatype, shape, entry.get("data", []))
                continue
            if offset + size > len(binary):
                raise InternalError(f"{self.url}: output {name!r} runs past the body")
            outputs[name] = from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        parameters = doc.get("parameters") or {}
        return InferResult(
            outputs=outputs,
            model_name=doc.get("model_name", ""),
            model_version=str(doc.get("model_version", "")),
            request_id=response.headers.get(_REQUEST_ID) or doc.get("id"),
            variant=response.headers.get(_VARIANT) or parameters.get("variant"),
            parameters=parameters,
            endpoint=self.url,
        )


def _model_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(version, safe='')}"


def _as_text(item: Input) -> list[str] | None:
    """BYTES elements as JSON strings, or None when one is not UTF-8 (sent raw then)."""
    try:
        return [value.decode() for value in item.array.reshape(-1)]
    except UnicodeDecodeError:
        return None


def _error_message(response: httpx.Response) -> str:
    """The ``{"error": ...}`` body's message, or the status line for any other body."""
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return f"{response.status_code} {response.reason_phrase}"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InternalError(f"the server answered with malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InternalError("the server answered with JSON that is not an object")
    return doc
