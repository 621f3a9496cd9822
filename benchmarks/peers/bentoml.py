"""A BentoML 1.4 service calling onnxruntime, on BentoML's own JSON (``{"rows": [...]}``).

Best configuration: one worker, an ``async`` API (no thread hop for a model this
small), access log and metrics off.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from peers._base import APPS, Layout, Peer


class BentoML(Peer):
    name = "bentoml"
    title = "BentoML"
    requirements: ClassVar[tuple[str, ...]] = (
        "bentoml==1.4.39",  # 1.4.40 needs a certifi release newer than PyPI has
        "onnxruntime==1.31.1",
        "uvloop",
        "httptools",
    )
    note = "one worker, async API, access log and metrics off; BentoML's JSON, not V2"

    def command(self, layout: Layout) -> list[str]:
        return [
            str(layout.venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Forest",
            "--working-dir",
            str(APPS),
            "--host",
            "127.0.0.1",
            "--port",
            str(layout.http_port),
        ]

    def env(self, layout: Layout) -> dict[str, str]:
        env = super().env(layout)
        env["BENCH_MODELS"] = str(layout.extra["artifacts"])
        env["BENTOML_HOME"] = str(layout.folder / "bentoml-home")
        env["BENTOML_DO_NOT_TRACK"] = "true"
        return env

    def ready_path(self) -> str:
        return "/readyz"

    def url(self, layout: Layout, model: str) -> str:
        return f"http://127.0.0.1:{layout.http_port}/{model}"

    def body(self, model: str, rows: np.ndarray[Any, Any]) -> bytes:
        return json.dumps({"rows": rows.tolist()}).encode()

    def outputs(self, answer: Any) -> dict[str, np.ndarray[Any, Any]]:
        return {name: np.asarray(value) for name, value in answer.items()}
