"""inferline itself, from this checkout, on its defaults (validation, metrics, logs on)."""

from __future__ import annotations

import shutil
from pathlib import Path

from peers._base import HOST_PYTHON, Layout, Peer

_ONNX = "runtime: onnx\n"
_SKLEARN = "runtime: sklearn\n"
_BATCHED = "runtime: sklearn\nbatching:\n  max_batch_size: 64\n  max_queue_delay_ms: 2\n"


class Inferline(Peer):
    name = "inferline"
    title = "inferline"
    serves = frozenset({"forest", "logreg", "forest_sk", "logreg_sk"})
    grpc = True
    note = (
        "default settings: validation, Prometheus metrics, drift monitor and one JSON log "
        "line per request (to a file) on; forest_sk batched (max_batch_size 64, 2 ms)"
    )

    def prepare(self, layout: Layout, artifacts: dict[str, Path]) -> None:
        settings = {"forest": _ONNX, "logreg": _ONNX, "forest_sk": _BATCHED, "logreg_sk": _SKLEARN}
        for model, text in settings.items():
            version = layout.models / model / "1"
            version.mkdir(parents=True, exist_ok=True)
            (layout.models / model / "model-settings.yaml").write_text(text)
            shutil.copy(artifacts[model], version / f"model{artifacts[model].suffix}")

    def command(self, layout: Layout) -> list[str]:
        return [
            str(HOST_PYTHON),
            "-m",
            "inferline",
            "serve",
            "--model-dir",
            str(layout.models),
            "--http-port",
            str(layout.http_port),
            "--grpc-port",
            str(layout.grpc_port),
            "--workers",
            str(layout.extra.get("workers", 1)),
        ]

    #: The settings a variant of this peer changes (environment variables).
    settings: tuple[tuple[str, str], ...] = ()

    def env(self, layout: Layout) -> dict[str, str]:
        env = super().env(layout)
        env["INFERLINE_HOME"] = str(layout.folder / "home")
        env.update(layout.extra.get("env", {}))
        env.update(self.settings)  # a variant stays itself under --inferline-env
        return env


class InferlineBare(Inferline):
    """inferline with its observability off: where validation and the HTTP path alone land."""

    name = "inferline-bare"
    title = "inferline, observability off"
    serves = frozenset({"forest", "logreg"})
    grpc = False
    note = (
        "validation on; INFERLINE_METRICS=false, INFERLINE_REQUEST_LOG=off, "
        "INFERLINE_MONITORING__ENABLED=false: what metrics, request log and drift monitor cost"
    )
    settings = (
        ("INFERLINE_METRICS", "false"),
        ("INFERLINE_REQUEST_LOG", "off"),
        ("INFERLINE_MONITORING__ENABLED", "false"),
    )


class InferlineObserved(Inferline):
    """inferline with metrics and the request log on, the drift monitor off: the issue's
    "validation, metrics and logging on" for the ratios to MLServer and FastAPI."""

    name = "inferline-observed"
    title = "inferline, metrics + request log"
    serves = frozenset({"forest", "logreg"})
    grpc = False
    note = (
        "validation, metrics and request log on (the defaults); INFERLINE_MONITORING__ENABLED="
        "false: no drift/skew windows and no feedback join"
    )
    settings = (("INFERLINE_MONITORING__ENABLED", "false"),)


class InferlineLogged(Inferline):
    """inferline with payload logging on for every request, on top of its defaults."""

    name = "inferline-logged"
    title = "inferline, payload log 100%"
    serves = frozenset({"forest", "logreg"})
    grpc = False
    note = (
        "defaults plus INFERLINE_PAYLOAD_LOG=file (every request and response, sampling 1.0): "
        "the issue's 'metrics and payload logging on'"
    )

    def env(self, layout: Layout) -> dict[str, str]:
        env = super().env(layout)
        env.update(
            INFERLINE_PAYLOAD_LOG="file",
            INFERLINE_PAYLOAD_LOG_DIR=str(layout.folder / "payloads"),
        )
        return env


class InferlineGrpcio(Inferline):
    """inferline on its defaults, gRPC served by grpc.aio: the engine comparison's baseline."""

    name = "inferline-grpcio"
    title = "inferline, gRPC on grpcio"
    serves = frozenset({"forest"})
    note = "defaults with INFERLINE_GRPC_ENGINE=grpcio (grpc.aio in the event loop)"
    settings = (("INFERLINE_GRPC_ENGINE", "grpcio"),)


class InferlineNative(Inferline):
    """inferline on its defaults, gRPC served by its own HTTP/2 server in the event loop."""

    name = "inferline-native"
    title = "inferline, gRPC native"
    serves = frozenset({"forest"})
    note = "defaults with INFERLINE_GRPC_ENGINE=native (inferline.transport.grpc_h2)"
    settings = (("INFERLINE_GRPC_ENGINE", "native"),)
