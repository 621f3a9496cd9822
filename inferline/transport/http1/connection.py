"""One HTTP/1.1 connection: parses requests with httptools, starts one app call each.

See the package docstring for what differs from uvicorn's protocol and why.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import urllib.parse
from collections import deque
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from inferline.settings.transport import ConnectionLimits
from inferline.transport.http1.cycle import CANCEL_ON_DISCONNECT, App, Cycle

__all__ = ["CANCEL_ON_DISCONNECT", "MAX_HEAD_BYTES", "HttpProtocol"]

MAX_HEAD_BYTES = 64 * 1024  #: request line plus headers; more is answered 431
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}
_DEFAULTS = ConnectionLimits()


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests, runs the ASGI app once per request."""

    #: Seconds a request head may take (``limits.head_timeout``); see :meth:`configured`.
    head_timeout: float = _DEFAULTS.head_timeout
    #: Open connections of the server past which a new one gets 503 and is closed.
    max_connections: int = _DEFAULTS.max_connections

    @classmethod
    def configured(cls, limits: ConnectionLimits) -> type[HttpProtocol]:
        """This protocol with ``limits`` (uvicorn builds it from a class, not an instance)."""
        return type(
            cls.__name__,
            (cls,),
            {"head_timeout": limits.head_timeout, "max_connections": limits.max_connections},
        )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of pipelined requests even when a later one says close.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.root_path = config.root_path
        self.raw_root_path = config.root_path.encode("ascii")
        self.asgi_version = config.asgi_version
        self.limit_concurrency = config.limit_concurrency
        # uvicorn >= 0.37: a fresh context per request (cpython#140947), opt-in there too
        self.reset_contextvars = getattr(config, "reset_contextvars", False)
        self.timeout_keep_alive = config.timeout_keep_alive
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks

        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.keep_alive_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # None while a request is under way

        self.cycle: Cycle | None = None  # the request being answered (or the last one)
        self.parsing: Cycle | None = None  # the request whose bytes are arriving
        self.to_start: tuple[Cycle, App] | None = None  # parsed, started after this read
        self.pipeline: deque[tuple[Cycle, App]] = deque()
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self.head_bytes = 0
        self.in_head = False  # a request line and headers are arriving
        self.head_fed = 0  # bytes of the reads after the one the head began in
        self.head_too_large = False
        self._defaults_source: list[tuple[bytes, bytes]] | None = None
        self._defaults = b""
        # Request-head deadline: one timer per connection, no clock read per request.
        self.head_timer: asyncio.TimerHandle | None = None
        self.heads = 0  # request heads completed
        self.head_mark: tuple[int, bool] | None = None  # (heads, waiting) at the last check
        self.turned_away = False  # over max_connections: answered 503, closing

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport)
        if len(self.connections) >= self.max_connections:
            self._turn_away()
            return
        self.connections.add(self)  # type: ignore[arg-type]
        self.head_timer = self.loop.call_later(self.head_timeout, self._head_check)
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)
        self.scheme = "https" if is_ssl(self.transport) else "http"

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for cycle in (self.cycle, self.parsing):
            if cycle is not None:
                cycle.client_gone()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        if self.keep_alive_timer is not None:
            self.keep_alive_timer.cancel()
            self.keep_alive_timer = None
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self.turned_away:
            return  # read and dropped until the lingering close
        headers = self.headers  # a new list with each request: tells if one began here
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.logger.warning("Unsupported upgrade request.")
        except httptools.HttpParserError:
            self._refuse()
            return
        if self.in_head and self.headers is headers:
            # httptools holds an unfinished header line, unseen here until it ends:
            # the head still arriving is bounded by all the reads since it began.
            self.head_fed += len(data)
            if self.head_fed > MAX_HEAD_BYTES:
                self.head_too_large = True
                self._refuse()
                return
        if self.to_start is not None:
            cycle, app = self.to_start
            self.to_start = None
            self._start(cycle, app)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_100_continue = False
        self.head_bytes = 0
        self.in_head = True
        self.head_fed = 0
        self.idle_since = None

    def _head_too_large(self) -> None:
        self.head_too_large = True
        raise ValueError("request head too large")  # httptools stops and raises

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large()
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large()
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.heads += 1
        parser = self.parser
        method = parser.get_method()
        http_version = parser.get_http_version()
        url = self.url
        if url[:1] == b"/" and b"#" not in url:  # origin form, the usual case
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "method": _METHODS.get(method) or method.decode("ascii"),
            "path": self.root_path + path,
            "raw_path": self.raw_root_path + raw_path,
            "query_string": query,
        }
        limit = self.limit_concurrency
        app = self.app
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        cycle = Cycle(self, scope, keep_alive, self.expect_100_continue)
        self.parsing = cycle
        current = self.cycle
        if current is None or current.response_complete:
            self.cycle = cycle
            self.to_start = (cycle, app)
        else:  # pipelined behind an answer still being written
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.response_complete:
            self.idle_since = self.loop.time()  # answered, its body still coming: not idle
            return
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is None or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.wake()

    # requests and answers

    def _start(self, cycle: Cycle, app: App) -> None:
        if self.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        cycle.task = task
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def default_headers(self) -> bytes:
        """The server's default headers (date, server), rendered once per change."""
        source = self.server_state.default_headers
        if source is not self._defaults_source:
            self._defaults_source = source
            self._defaults = b"".join(name + b": " + value + b"\r\n" for name, value in source)
        return self._defaults

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self.cycle = cycle
            self._start(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.keep_alive_timer is None:
            self.keep_alive_timer = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_expired
            )

    def _turn_away(self) -> None:
        """Over ``max_connections``: answer 503 at once, not leave the client hanging.

        The answer is followed by our FIN, and what the client sends meanwhile is read
        and dropped for up to a second (a lingering close: closing with its request
        unread would reset the connection and could discard the 503 at the client).
        """
        self.turned_away = True
        self.logger.warning("Exceeded the connection limit (%d).", self.max_connections)
        message = b"Too many connections; try again later."
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[503],
                    self.default_headers(),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(message),
                    b"connection: close\r\n\r\n",
                    message,
                )
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.head_timer = self.loop.call_later(min(1.0, self.head_timeout), self.transport.close)

    def _head_check(self) -> None:
        """Every ``head_timeout``: close a connection that waited for a whole period, at
        this check and the last, for a request head that did not come (slowloris).

        Waiting means a head is arriving, or none ever came; a connection idle after an
        answer is the keep-alive timer's. A head begun is answered 408, else it closes.
        """
        self.head_timer = None
        if self.transport.is_closing():
            return
        waiting = self.in_head or self.cycle is None
        mark = (self.heads, waiting)
        if waiting and mark == self.head_mark:
            if self.in_head:
                self.to_start = None
                self.logger.warning("Request head not completed in time.")
                self._send_error(408, "Request head not completed in time.")
            else:
                self.transport.close()
            return
        self.head_mark = mark
        self.head_timer = self.loop.call_later(self.head_timeout, self._head_check)

    def _keep_alive_expired(self) -> None:
        """Close a connection idle since its last answer for the keep-alive timeout."""
        self.keep_alive_timer = None
        if self.idle_since is None or self.transport.is_closing():
            return  # a request is under way; its answer re-arms the timer
        idle = self.loop.time() - self.idle_since
        if idle >= self.timeout_keep_alive:
            self.transport.close()
        else:
            self.keep_alive_timer = self.loop.call_later(
                self.timeout_keep_alive - idle, self._keep_alive_expired
            )

    def shutdown(self) -> None:
        """The server is stopping: close when idle, else after the last request read.

        Requests pipelined behind the one under way are answered first, as uvicorn
        does: the client sent them before the server began to stop.
        """
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            (self.parsing or self.cycle).keep_alive = False

    def _refuse(self) -> None:
        """Answer a request that cannot be parsed (431 if its head is too large), close."""
        self.to_start = None  # the connection closes: nobody would read its answer
        if self.head_too_large:
            message = f"Request line and headers are over {MAX_HEAD_BYTES} bytes."
            self.logger.warning(message)
            self._send_error(431, message)
        else:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self._send_error(400, message)

    def _send_error(self, status: int, message: str) -> None:
        content = [
            STATUS_LINE[status],
            self.default_headers(),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(message)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            message.encode("ascii"),
        ]
        self.transport.write(b"".join(content))
        self.transport.close()
