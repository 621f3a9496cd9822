"""Structured logs: JSON lines (structlog) for the server's own logs and one per request.

Every stdlib logger (inferline's modules, uvicorn) is rendered by the same
structlog pipeline, so a log shipper sees one format. The per-request line is an
observer of the data plane: request id, model, version, protocol, status and
latency, at the level the settings choose (or off).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from inferline.monitoring.records import InferenceRecord

__all__ = ["RequestLog", "configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(level: str, fmt: str = "json") -> None:
    """Route stdlib and structlog output through one renderer on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestLog:
    """One log line per inference request (an observer of the data plane)."""

    def __init__(self, level: str) -> None:
        self.level = _LEVELS[level]
        self._logger = structlog.stdlib.get_logger("inferline.requests")
        self._stdlib = logging.getLogger("inferline.requests")

    def observe(self, record: InferenceRecord) -> None:
        if not self._stdlib.isEnabledFor(self.level):
            return
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "model": record.model,
            "version": record.version,
            "protocol": record.protocol,
            "status": record.status,
            "latency_ms": round(record.latency * 1000, 3),
        }
        if record.error is not None:
            fields["error"] = record.error
        self._logger.log(self.level, "inference", **fields)
