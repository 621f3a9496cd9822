"""Structured logs: JSON lines (structlog) for the server's own logs and one per request.

Every stdlib logger (inferline's modules, uvicorn) is rendered by the same
structlog pipeline, so a log shipper sees one format. The per-request line is an
observer of the data plane: request id, model, version, protocol, status and
latency, at the level the settings choose (or off).

While the handler :func:`configure_logging` installs (JSON) is the only one a
request line would reach, :class:`RequestLog` renders the line itself: the same
fields, in the same order, that the structlog + stdlib round trip writes, at a
tenth of its cost (that round trip was a quarter of a small request's CPU
time). Requests are queued as they are answered and written together at most
:data:`LINGER_SECONDS` later (or once :data:`MAX_PENDING` are queued): one write
instead of one per request, and no rendering on a request's path. Writing once
per loop turn instead cost some 20 µs a request under load, where a turn often
holds a single request. Each line is stamped with the time its request was
answered, so a line is as exact as if it had been written at once; only its
place among the server's other log lines may shift by up to the linger. The
part of a line that repeats (model, version, protocol, status) is rendered once
per combination. Any other handler (a test's
``caplog``, an OpenTelemetry bridge) gets the full path, line by line.

Every line carries the process id (``pid``: which worker of ``--workers N``
wrote it). A line logged with an exception carries its formatted traceback
under ``exception``, and the stdlib ``extra`` fields :data:`EXTRA_FIELDS`
(``request_id`` on an unexpected error's line).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
from typing import Any

import orjson
import structlog
import structlog.contextvars as _structlog_vars

from inferline.monitoring.records import InferenceRecord, iso_utc

__all__ = ["EXTRA_FIELDS", "LINGER_SECONDS", "MAX_PENDING", "RequestLog", "configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


#: The stdlib ``extra={...}`` keys that become fields of a line.
EXTRA_FIELDS = ("request_id", "model", "version")

#: Longest a request line waits to be written; a server stopping writes what is left.
LINGER_SECONDS = 0.05
#: Queued lines that are written at once, whatever the linger (bounds the memory).
MAX_PENDING = 4096

#: A request record and, when structlog context variables were ever bound, its context.
_Entry = tuple[InferenceRecord, contextvars.Context | None]

#: The JSON handler :func:`configure_logging` installed, if any (see the module docstring).
_json_handler: list[logging.StreamHandler[Any]] = []


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _add_pid(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["pid"] = os.getpid()
    return event_dict


def configure_logging(level: str, fmt: str = "json") -> None:
    """Route stdlib and structlog output through one renderer on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]
    # The console renderer formats an exception itself; JSON needs it as text first.
    renderer: list[Any] = (
        [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
        if fmt == "json"
        else [
            # A plain traceback: rich's default prints each frame's local variables,
            # request payloads among them.
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(EXTRA_FIELDS)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
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
    # One line per alembic plugin at every start says nothing an operator can use.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class RequestLog:
    """One log line per inference request (an observer of the data plane, on its loop)."""

    def __init__(self, level: str) -> None:
        self.level = _LEVELS[level]
        self._level_name = level
        self._logger = structlog.stdlib.get_logger("inferline.requests")
        self._stdlib = logging.getLogger("inferline.requests")
        #: Records waiting for the linger to pass, their handler and the pending flush.
        self._pending: list[_Entry] = []
        self._handler: logging.StreamHandler[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: The rendered middle of a line per (model, version, protocol, status).
        self._middles: dict[tuple[str, str, str, int], str] = {}
        self._tail = (
            f',"event":"inference","level":{orjson.dumps(level).decode()},'
            f'"logger":{orjson.dumps(self._stdlib.name).decode()},"timestamp":"'
        )
        #: After the timestamp: this process's id (a worker renders its own lines).
        self._pid = os.getpid()
        self._end = f'","pid":{self._pid}}}'

    def observe(self, record: InferenceRecord) -> None:
        pending = self._pending
        if pending:  # this batch's handler, loop and level are checked already
            pending.append((record, _context()))
            if len(pending) >= MAX_PENDING:
                self.flush()
            return
        if not self._stdlib.isEnabledFor(self.level):
            return
        handler = self._direct_handler()
        if handler is None:
            self._logger.log(self.level, "inference", **_fields(record))
            return
        entry = (record, _context())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _emit(handler, self._render([entry], handler.terminator))
            return
        self._pending.append(entry)
        self._handler = handler
        self._timer = loop.call_later(LINGER_SECONDS, self.flush)

    def flush(self) -> None:
        """Render and write the queued lines now (the loop does it after the linger)."""
        pending, handler, timer = self._pending, self._handler, self._timer
        self._pending, self._handler, self._timer = [], None, None
        if timer is not None:
            timer.cancel()
        if pending and handler is not None:
            _emit(handler, self._render(pending, handler.terminator))

    def _render(self, entries: list[_Entry], end: str) -> str:
        """The lines the structlog pipeline would write, stamped when each was answered."""
        tail, close, lines = self._tail, self._end, []
        for record, context in entries:
            stamp = iso_utc(record.started + record.latency)
            if record.error is not None or (context is not None and len(context) > 0):
                lines.append(self._render_fields(record, context, stamp) + end)
                continue
            key = (record.model, record.version, record.protocol, record.status)
            middle = self._middles.get(key)
            if middle is None:
                middle = self._middles[key] = _middle(key)
            micros = int(record.latency * 1_000_000 + 0.5)
            lines.append(
                f'{{"request_id":{orjson.dumps(record.request_id).decode()}{middle}'
                f"{micros // 1000}.{micros % 1000:03d}{tail}{stamp}{close}{end}"
            )
        return "".join(lines)

    def _render_fields(
        self, record: InferenceRecord, context: contextvars.Context | None, stamp: str
    ) -> str:
        """The general case: an error message, or context variables to merge."""
        fields = _fields(record)
        fields["event"] = "inference"
        if context is not None:
            for key, value in context.run(structlog.contextvars.get_contextvars).items():
                fields.setdefault(key, value)
        fields["level"] = self._level_name
        fields["logger"] = self._stdlib.name
        fields["timestamp"] = stamp
        fields["pid"] = self._pid
        return orjson.dumps(fields, default=str).decode()

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


def _context() -> contextvars.Context | None:
    """The caller's context when structlog context variables may be bound, else None.

    structlog keeps one ContextVar per key ever bound; while there are none, no
    copy is needed (the common case, and a copy per request is not free).
    """
    return contextvars.copy_context() if getattr(_structlog_vars, "_CONTEXT_VARS", True) else None


def _middle(key: tuple[str, str, str, int]) -> str:
    model, version, protocol, status = key
    rendered = orjson.dumps(
        {"model": model, "version": version, "protocol": protocol, "status": status}
    ).decode()
    return f',{rendered[1:-1]},"latency_ms":'


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
