"""The ceiling: a raw Starlette route on inferline's own HTTP stack (uvicorn's server,
uvloop, inferline's HTTP/1.1 protocol) that reads the request and answers a constant,
in inferline's venv; for gRPC, grpc.aio doing the same."""

from __future__ import annotations

from peers._base import APPS, HOST_PYTHON, Layout, Peer


class Hello(Peer):
    name = "hello"
    title = "hello world (ceiling)"
    checked = False
    grpc = True
    note = (
        "no model: Starlette on uvicorn/uvloop with inferline's HTTP/1.1 protocol answering a "
        "constant; "
        "for gRPC, grpc.aio parsing the ModelInferRequest and answering a constant"
    )

    def command(self, layout: Layout) -> list[str]:
        app = str(APPS / "hello_app.py")
        return [str(HOST_PYTHON), app, str(layout.http_port), str(layout.grpc_port)]
