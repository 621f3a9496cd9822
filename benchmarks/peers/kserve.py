"""KServe's ModelServer (V2 REST and gRPC) around a ``kserve.Model`` calling onnxruntime.

Best configuration: one worker, latency logging and the uvicorn access log off.
"""

from __future__ import annotations

from typing import ClassVar

from peers._base import APPS, Layout, Peer


class KServe(Peer):
    name = "kserve"
    title = "KServe"
    requirements: ClassVar[tuple[str, ...]] = ("kserve==0.21.0", "onnxruntime==1.31.1")
    note = "kserve.ModelServer, V2 REST; latency logging and access log off"

    def command(self, layout: Layout) -> list[str]:
        return [
            str(layout.python),
            str(APPS / "kserve_app.py"),
            "--models",
            str(layout.extra["artifacts"]),
            "--http_port",
            str(layout.http_port),
            "--grpc_port",
            str(layout.grpc_port),
            "--enable_latency_logging",
            "false",
        ]
