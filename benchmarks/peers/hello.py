"""The ceiling: a raw Starlette route on inferline's own stack (uvicorn, uvloop,
httptools, grpc.aio) that reads the request and answers a constant, in inferline's venv."""

from __future__ import annotations

from peers._base import APPS, HOST_PYTHON, Layout, Peer


class Hello(Peer):
    name = "hello"
    title = "hello world (ceiling)"
    checked = False
    grpc = True
    note = (
        "no model: Starlette on inferline's uvicorn/uvloop/httptools answering a constant; "
        "for gRPC, grpc.aio parsing the ModelInferRequest and answering a constant"
    )

    def command(self, layout: Layout) -> list[str]:
        app = str(APPS / "hello_app.py")
        return [str(HOST_PYTHON), app, str(layout.http_port), str(layout.grpc_port)]
