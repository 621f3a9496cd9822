"""The minimal FastAPI endpoint: orjson in and out, no validation, no metrics, no logs."""

from __future__ import annotations

from typing import ClassVar

from peers._base import APPS, Layout, Peer


class FastAPI(Peer):
    name = "fastapi"
    title = "FastAPI (minimal)"
    requirements: ClassVar[tuple[str, ...]] = (
        "fastapi",
        "uvicorn[standard]",
        "orjson",
        "onnxruntime==1.31.1",
    )
    note = "one async route, orjson, no validation/metrics/logs; uvicorn+uvloop+httptools"

    def command(self, layout: Layout) -> list[str]:
        return [
            str(layout.python),
            str(APPS / "fastapi_app.py"),
            str(layout.extra["artifacts"]),
            str(layout.http_port),
        ]
