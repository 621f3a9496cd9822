"""The sending half of a native gRPC connection: answers, flow control, stream ends.

:class:`Output` is the base of :class:`~inferline.transport.grpc_h2.connection.Connection`
(which reads); it owns what both halves touch: the open streams, the windows
in both directions and the one place bytes go out (:meth:`Output._write`, which
batches while ``data_received`` runs). Its writers put a whole answer into one
``transport.write`` when the client's windows allow it and queue the rest
until WINDOW_UPDATE (:meth:`Output._drain`).
"""

from __future__ import annotations

import asyncio
import contextlib

from inferline.transport.grpc_h2 import frames as f
from inferline.transport.grpc_h2.frames import ErrorCode, Limits
from inferline.transport.grpc_h2.streams import Stream

__all__ = ["Output"]

_frame_header = f.header
#: Stream ids we reset and whose in-flight frames we drop silently (§5.4.2).
_RESET_MEMORY = 128
_DEFAULT_WINDOW = 65_535


class Output:
    """Stream bookkeeping and everything written to the client."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        #: Handler tasks still running (a stream may be answered before its task returns).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Frames to write at the end of ``data_received`` (None outside it).
        self._out: list[bytes] | None = None
        self._last_id = 0
        self._reset: dict[int, None] = {}
        # Flow control: what we may send, what the client may send, what to credit back.
        self._send_window = _DEFAULT_WINDOW
        self.max_frame = f.MIN_MAX_FRAME_SIZE
        self._recv_window = limits.conn_window
        self._unacked = 0
        self._buffered = 0
        self._blocked: dict[int, Stream] = {}
        self.closing = False
        self._closed = False
        #: Request bytes held by every connection of the server (``limits.pool``).
        self.pool = limits.pool
        #: The transport's buffer is over its high-water mark: reading is paused.
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    def task_done(self, task: asyncio.Task[None]) -> None:
        """A handler ended: forget it, and break the task -> cancellation traceback ->
        frame -> stream -> task cycle, so a cancelled handler is freed by reference
        counting, not left for a rare full collection (see ``server._tune_gc``)."""
        self.tasks.discard(task)
        if task.cancelled():
            # The task keeps the CancelledError it was cancelled with (its traceback holds
            # the handler's frame, whose locals hold the stream, which holds the task)
            # until someone asks for its result: ask, and let the error go.
            with contextlib.suppress(asyncio.CancelledError):
                task.result()

    # -- flow control ----------------------------------------------------------------
    def _maybe_credit(self, out: list[bytes] | None = None) -> None:
        """Give the client back the connection window it used, in batches of a quarter
        window, unless this connection already holds too many request bytes."""
        if (
            self._unacked < self._limits.conn_window >> 2
            or self._buffered > self._limits.buffer_cap
            or self._closed
        ):
            return
        frame = f.window_update(0, self._unacked)
        if out is not None:
            out.append(frame)
        else:
            self._write(frame)
        self._recv_window += self._unacked
        self._unacked = 0

    def release(self, stream: Stream) -> None:
        """The stream's request bytes are no longer buffered here."""
        self._buffered -= stream.size
        self.pool.held -= stream.size
        stream.chunks = []
        stream.size = 0
        if self._unacked:
            self._maybe_credit()

    def _take(self, stream: Stream, data: bytes, parts: list[bytes]) -> bytes:
        """Append as many DATA frames of ``data`` as the windows allow; return the rest."""
        allowed = min(self._send_window, stream.send_window, len(data))
        if allowed <= 0:
            return data
        step, sid = self.max_frame, stream.id
        for start in range(0, allowed, step):
            chunk = data[start : min(start + step, allowed)]
            parts.append(_frame_header(f.DATA, 0, sid, len(chunk)))
            parts.append(chunk)
        self._send_window -= allowed
        stream.send_window -= allowed
        return data[allowed:]

    def _drain(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            parts: list[bytes] = []
            stream.pending = rest = self._take(stream, stream.pending, parts)
            if not rest:
                del self._blocked[stream.id]
                if stream.trailer:
                    parts.append(stream.trailer)
                    stream.trailer = b""
                    self._end(stream)
                if stream.waiter is not None and not stream.waiter.done():
                    stream.waiter.set_result(None)
            if parts:
                self._write(b"".join(parts))

    # -- writing answers -------------------------------------------------------------
    def respond(self, stream: Stream, headers: bytes, message: bytes, trailers: bytes) -> None:
        """A whole unary answer: HEADERS, the message in DATA, trailers; one write if it fits."""
        if stream.ended or self._closed:
            return
        sid = stream.id
        size = len(message) + 5
        prefix = b"\x00" + (size - 5).to_bytes(4, "big")
        head = _frame_header(f.HEADERS, f.END_HEADERS, sid, len(headers))
        if len(trailers) > self.max_frame:  # a long echoed request id: CONTINUATION frames
            tail, trailers = f.headers_frames(sid, trailers, True, self.max_frame), b""
        else:
            tail = _frame_header(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, len(trailers))
        stream.headers_sent = True
        if size <= self.max_frame and size <= self._send_window and size <= stream.send_window:
            self._send_window -= size
            stream.send_window -= size
            data = _frame_header(f.DATA, 0, sid, size)
            self._write(b"".join((head, headers, data, prefix, message, tail, trailers)))
            self._end(stream)
            return
        parts = [head, headers]
        rest = self._take(stream, prefix + message, parts)
        if rest:
            stream.pending, stream.trailer = rest, tail + trailers
            self._blocked[sid] = stream
        else:
            parts += (tail, trailers)
        self._write(b"".join(parts))
        if not rest:
            self._end(stream)

    async def send_message(self, stream: Stream, headers: bytes, message: bytes) -> None:
        """One message of a streaming answer (HEADERS first); waits while windows are shut."""
        if stream.ended or self._closed:
            raise asyncio.CancelledError
        parts: list[bytes] = []
        if not stream.headers_sent:
            stream.headers_sent = True
            parts += (_frame_header(f.HEADERS, f.END_HEADERS, stream.id, len(headers)), headers)
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        if stream.pending:
            stream.pending += data
        else:
            stream.pending = self._take(stream, data, parts)
            if stream.pending:
                self._blocked[stream.id] = stream
        if parts:
            self._write(b"".join(parts))
        if stream.pending:
            stream.waiter = asyncio.get_running_loop().create_future()
            await stream.waiter
        if self._write_paused and not self._closed:  # the client does not read: wait
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    def finish(self, stream: Stream, headers: bytes, trailers: bytes) -> None:
        """End the answer with ``trailers``; trailers-only (after ``headers``) if nothing
        was sent yet."""
        if stream.ended or self._closed:
            return
        block = trailers if stream.headers_sent else headers + trailers
        stream.headers_sent = True
        frame = f.headers_frames(stream.id, block, True, self.max_frame)
        if stream.pending:
            stream.trailer = frame
            return
        self._write(frame)
        self._end(stream)

    def _end(self, stream: Stream) -> None:
        """We sent END_STREAM: stop the client's upload if it is still going, forget the stream."""
        stream.ended = True
        if not stream.remote_closed:
            self._write(f.rst_stream(stream.id, ErrorCode.NO_ERROR))
            self._remember_reset(stream.id)
        self._forget(stream)

    def _reset_stream(self, stream_id: int, code: int) -> None:
        self._write(f.rst_stream(stream_id, code))
        self._remember_reset(stream_id)
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._drop(stream)

    def _remember_reset(self, stream_id: int) -> None:
        self._reset[stream_id] = None
        if len(self._reset) > _RESET_MEMORY:
            del self._reset[next(iter(self._reset))]

    def _drop(self, stream: Stream) -> None:
        """The stream is gone (reset, or the connection): cancel its handler."""
        stream.ended = True
        if stream.task is not None:
            stream.task.cancel()
        if stream.waiter is not None and not stream.waiter.done():
            stream.waiter.cancel()
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.size:
            self.release(stream)
        self._blocked.pop(stream.id, None)
        if self.streams.pop(stream.id, None) is not None and self.closing:
            self._maybe_close()

    def _write(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        elif self.transport is not None and not self._closed:
            self.transport.write(data)

    # -- backpressure: a client that does not read stops being read ----------------
    def pause_writing(self) -> None:
        """The transport holds more than ``limits.write_buffer`` bytes for the client:
        read nothing more from it (each request or PING it sends adds to the queue)."""
        self._write_paused = True
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- shutdown --------------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful GOAWAY: the streams already open finish, no new ones start."""
        if self._closed:
            return
        self.closing = True
        self._write(f.goaway(self._last_id, ErrorCode.NO_ERROR))
        self._maybe_close()

    def abort(self) -> None:
        """Close now, cancelling whatever is still running."""
        if self.transport is not None and not self._closed:
            self._abandon()
            self.transport.close()

    def _maybe_close(self) -> None:
        if not self.streams and self.transport is not None and not self._closed:
            self._closed = True
            if self._out is None:
                self.transport.close()

    def _abandon(self) -> None:
        self._closed = True
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.cancel()
        for stream in list(self.streams.values()):
            self._drop(stream)
        for task in self.tasks:
            task.cancel()
