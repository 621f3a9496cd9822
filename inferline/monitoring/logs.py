"""Structured logs: JSON lines (structlog) for the server's own logs and one per request.

Every stdlib logger (inferline's modules, uvicorn) is rendered by the same
structlog pipeline, so a log shipper sees one format. The per-request line is an
observer of the data plane: request id, model, version, protocol, status and
latency, at the level the settings choose (or off).

While the handler :func:`configure_logging` installs (JSON) is the only one a
request line would reach, :class:`RequestLog` renders the line itself: the same
bytes the structlog + stdlib round trip produces, at a tenth of its cost (that
round trip was a quarter of a small request's CPU time). The requests answered
during one turn of the event loop are rendered and written together at the start
of the next turn (with the time and context each was answered in): one write
instead of one per request, and no rendering on a request's path. Any other
handler (a test's ``caplog``, an OpenTelemetry bridge) gets the full path, line
by line.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any

import orjson
import structlog

from inferline.monitoring.records import InferenceRecord, iso_utc

__all__ = ["RequestLog", "configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


#: A request record and the context it was answered in (its time: ``started + latency``).
_Entry = tuple[InferenceRecord, contextvars.Context]

#: The JSON handler :func:`configure_logging` installed, if any (see the module docstring).
_json_handler: list[logging.StreamHandler[Any]] = []


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
    _json_handler[:] = [handler] if fmt == "json" else []
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestLog:
    """One log line per inference request (an observer of the data plane)."""

    def __init__(self, level: str) -> None:
        self.level = _LEVELS[level]
        self._level_name = level
        self._logger = structlog.stdlib.get_logger("inferline.requests")
        self._stdlib = logging.getLogger("inferline.requests")
        #: Records waiting to be written at the next loop turn, their handler and loop.
        self._pending: list[_Entry] = []
        self._handler: logging.StreamHandler[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def observe(self, record: InferenceRecord) -> None:
        if not self._stdlib.isEnabledFor(self.level):
            return
        if self._pending:  # this loop turn's handler and loop are chosen already
            try:
                same_loop = asyncio.get_running_loop() is self._loop
            except RuntimeError:
                same_loop = False
            if same_loop:
                self._pending.append((record, contextvars.copy_context()))
                return
            self.flush()
        handler = self._direct_handler()
        if handler is None:
            self._logger.log(self.level, "inference", **_fields(record))
            return
        entry = (record, contextvars.copy_context())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _emit(handler, self._render(entry, handler.terminator))
            return
        self._pending.append(entry)
        self._handler, self._loop = handler, loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Render and write the queued lines now (the loop does it once per turn)."""
        pending, handler = self._pending, self._handler
        self._pending, self._handler, self._loop = [], None, None
        if pending and handler is not None:
            end = handler.terminator
            _emit(handler, "".join([self._render(entry, end) for entry in pending]))

    def _render(self, entry: _Entry, end: str) -> str:
        """The line the structlog pipeline would write for the record."""
        record, context = entry
        fields = _fields(record)
        # What merge_contextvars, add_log_level, add_logger_name and TimeStamper add.
        fields["event"] = "inference"
        if len(context) > 0:
            for key, value in context.run(structlog.contextvars.get_contextvars).items():
                fields.setdefault(key, value)
        fields["level"] = self._level_name
        fields["logger"] = self._stdlib.name
        fields["timestamp"] = iso_utc(record.started + record.latency)
        return orjson.dumps(fields, default=str).decode() + end

    def _direct_handler(self) -> logging.StreamHandler[Any] | None:
        """The installed JSON handler when it is the only one this logger's lines reach."""
        if not _json_handler:
            return None
        handler = _json_handler[0]
        logger: logging.Logger | None = self._stdlib
        while logger is not None and logger is not logging.root:
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        root = logging.root
        if root.handlers != [handler] or root.filters or handler.filters:
            return None
        return handler if handler.level <= self.level else None


def _fields(record: InferenceRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "model": record.model,
        "version": record.version,
        "protocol": record.protocol,
        "status": record.status,
        "latency_ms": int(record.latency * 1_000_000 + 0.5) / 1000,
    }
    if record.error is not None:
        fields["error"] = record.error
    return fields


def _emit(handler: logging.StreamHandler[Any], text: str) -> None:
    """What ``StreamHandler.emit`` does with a formatted record: write and flush."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    finally:
        handler.release()
