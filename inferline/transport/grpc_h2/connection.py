"""One HTTP/2 connection (RFC 9113) of the native gRPC server, as an asyncio ``Protocol``.

Reads frames, keeps stream state and checks every frame against the spec, and
hands complete requests to the :class:`~inferline.protocols.grpc_native.Dispatcher`;
the writing half (answers, windows, stream ends) is its base class,
:class:`~inferline.transport.grpc_h2.output.Output`. Control frames produced
while reading (SETTINGS and PING acks, WINDOW_UPDATE, RST_STREAM) are written
once, at the end of ``data_received``.

Errors follow §5.4: a connection error writes GOAWAY with its code and closes;
a stream error resets that stream and the connection goes on. Memory is bounded
by the frame size, the header-block limit, the message limit (checked against
the length prefix before the body arrives), a per-connection cap on buffered
request bytes, past which the connection window is no longer replenished, and
the server-wide ``limits.pool``. What a client may make it do for free (resets,
PINGs, SETTINGS, empty frames, acks owed) is budgeted, and its deadlines kept,
by :mod:`~inferline.transport.grpc_h2.guard`; a client that does not read stops
being read (``Output.pause_writing``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from inferline.transport.grpc_h2 import frames as f
from inferline.transport.grpc_h2.frames import ErrorCode, Limits
from inferline.transport.grpc_h2.guard import Budget, ConnectionError_, Deadlines, Guarded
from inferline.transport.grpc_h2.hpack import Decoder, HeaderBomb, HpackError
from inferline.transport.grpc_h2.output import Output
from inferline.transport.grpc_h2.streams import RequestHead, Stream, oversized, parse_head

__all__ = ["Connection", "Dispatcher", "Limits"]

logger = logging.getLogger(__name__)

_unpack_header = f.HEADER.unpack_from
_DEFAULT_WINDOW = 65_535
#: Bytes of repeated header blocks (and their decoded size) cached per connection.
_HEAD_CACHE_BYTES = 16 * 1024
#: Larger blocks are decoded every time.
_HEAD_CACHE_BLOCK = 1024


class Dispatcher(Protocol):
    """What a connection needs of the layer above it (``protocols/grpc_native.py``)."""

    def open(self, conn: Connection, stream: Stream) -> bool:
        """Check a new request's head; False when it was answered (refused) already."""

    def size_ok(self, conn: Connection, stream: Stream) -> bool:
        """Check a message's declared length once its prefix is in; False when refused."""

    def start(self, conn: Connection, stream: Stream) -> None:
        """Run the request, whose message is complete."""


class Connection(Output, Guarded, asyncio.Protocol):
    """Server side of one HTTP/2 connection carrying gRPC: the reading half."""

    def __init__(
        self, dispatcher: Dispatcher, limits: Limits, on_close: Any, *, refuse: bool = False
    ) -> None:
        super().__init__(limits)
        self._dispatcher = dispatcher
        self._on_close = on_close
        #: The server is at ``limits.max_connections``: GOAWAY at once.
        self._refuse = refuse
        self._decoder = Decoder()
        self._head_cache: dict[bytes, tuple[int, RequestHead]] = {}
        self._head_cache_bytes = 0
        self._resets = Budget(limits.reset_burst, limits.reset_rate)
        self._nuisance = Budget(limits.control_burst, limits.control_rate)
        #: Control frames written since the transport's buffer was last empty.
        self._control = 0
        self._deadlines: Deadlines | None = None
        self._pending = bytearray()
        self._need = len(f.PREFACE)
        self._preface = False
        self._settings_seen = False
        # Header block being assembled: stream id, flags, parts, CONTINUATION count.
        self._block_id = 0
        self._block_flags = 0
        self._block: list[bytes] = []
        self._block_frames = 0
        self._peer_stream_window = _DEFAULT_WINDOW

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        limits = self._limits
        if self._refuse:
            busy = f.goaway(0, ErrorCode.ENHANCE_YOUR_CALM, b"too many connections")
            transport.write(limits.settings_frame() + busy)
            self._closed = True
            transport.close()
            return
        transport.set_write_buffer_limits(high=limits.write_buffer)
        increment = limits.conn_window - _DEFAULT_WINDOW
        grow = f.window_update(0, increment) if increment > 0 else b""
        transport.write(limits.settings_frame() + grow)
        self._deadlines = Deadlines(limits, self._state, self._opened, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        self._abandon()
        if self._deadlines is not None:
            self._deadlines.cancel()
        self._on_close(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        deadlines = self._deadlines
        if deadlines is not None:
            deadlines.last_read = deadlines.now()
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return
            data = bytes(self._pending)
            self._pending.clear()
        self._out = out = []
        try:
            self._read(data)
        except ConnectionError_ as exc:
            out.append(f.goaway(self._last_id, exc.code, str(exc).encode()[:256]))
            self._abandon()
        except HpackError as exc:
            out.append(f.goaway(self._last_id, ErrorCode.COMPRESSION_ERROR, str(exc).encode()))
            self._abandon()
        except Exception:  # a bug must not take the event loop's callback down
            logger.exception("native gRPC connection failed")
            out.append(f.goaway(self._last_id, ErrorCode.INTERNAL_ERROR))
            self._abandon()
        self._out = None
        self._maybe_credit(out)
        transport = self.transport
        if transport is None:
            return
        if out:
            transport.write(b"".join(out))
        if self._closed:
            transport.close()
        elif self._control and not transport.get_write_buffer_size():
            self._control = 0  # the client took every ack and reset we owed it

    # -- budgets ---------------------------------------------------------------------
    def _reset_stream(self, stream_id: int, code: int) -> None:
        self._owe_control()
        super()._reset_stream(stream_id, code)

    def _read(self, data: bytes) -> None:
        pos, end = 0, len(data)
        if not self._preface:
            if end < len(f.PREFACE):
                if not f.PREFACE.startswith(data):
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "bad connection preface")
                self._pending += data
                return
            if not data.startswith(f.PREFACE):
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "bad connection preface")
            self._preface = True
            pos = len(f.PREFACE)
        max_size = self._limits.max_frame_size
        while end - pos >= 9:
            high, low, kind, flags, stream_id = _unpack_header(data, pos)
            size = (high << 8) | low
            if size > max_size:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, f"frame of {size} bytes")
            stop = pos + 9 + size
            if stop > end:
                self._need = stop - pos
                break
            payload = data[pos + 9 : stop]
            pos = stop
            stream_id &= 0x7FFFFFFF
            if self._block_id and kind != f.CONTINUATION:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION")
            if not self._settings_seen and kind != f.SETTINGS:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
            if kind == f.DATA:
                self._on_data(flags, stream_id, payload)
            elif kind == f.HEADERS:
                self._on_headers(flags, stream_id, payload)
            elif kind == f.WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == f.SETTINGS:
                self._on_settings(flags, stream_id, payload)
            elif kind == f.PING:
                if size != 8:
                    raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "PING is not 8 bytes")
                if stream_id:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
                if not flags & f.ACK:
                    self._calm(self._nuisance, "PINGs")
                    self._owe_control()
                    self._write(f.frame(f.PING, f.ACK, 0, payload))
            elif kind == f.RST_STREAM:
                self._on_rst_stream(stream_id, payload)
            elif kind == f.CONTINUATION:
                self._on_continuation(flags, stream_id, payload)
            elif kind == f.PRIORITY:
                self._calm(self._nuisance, "PRIORITY frames")
                if not stream_id:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if size != 5:
                    self._reset_stream(stream_id, ErrorCode.FRAME_SIZE_ERROR)
            elif kind == f.GOAWAY:
                self.closing = True
                self._maybe_close()
            elif kind == f.PUSH_PROMISE:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            else:  # unknown frame types are ignored (§4.1), within the budget
                self._calm(self._nuisance, "unknown frames")
        if pos < end:
            self._pending += data[pos:]
            if end - pos < 9:
                self._need = 9

    # -- frames ----------------------------------------------------------------------
    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        if not size and not flags & f.END_STREAM:
            self._calm(self._nuisance, "empty DATA frames")
        if size > self._recv_window:
            raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "DATA over the connection window")
        self._recv_window -= size
        self._unacked += size
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if not stream_id or stream_id > self._last_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            if stream is not None or stream_id not in self._reset:
                self._reset_stream(stream_id, ErrorCode.STREAM_CLOSED)
            return
        if size > stream.recv_window:
            self._reset_stream(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= size
        if flags & f.PADDED:
            payload = _unpad(payload)
        if payload:
            stream.chunks.append(payload)
            stream.size += len(payload)
            self._buffered += len(payload)
            self.pool.held += len(payload)
            if stream.size >= 5 and not self._dispatcher.size_ok(self, stream):
                return
        if flags & f.END_STREAM:
            stream.remote_closed = True
            self._dispatcher.start(self, stream)
        elif stream.recv_window < self._limits.stream_window >> 1:
            self._write(f.window_update(stream_id, self._limits.stream_window - stream.recv_window))
            stream.recv_window = self._limits.stream_window

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "short HEADERS priority")
            payload = payload[5:]
        if flags & f.END_HEADERS:
            self._on_header_block(flags, stream_id, payload)
            return
        self._block_id, self._block_flags = stream_id, flags
        self._block, self._block_frames = [payload], 0

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != self._block_id or not stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        if not payload and not flags & f.END_HEADERS:
            self._calm(self._nuisance, "empty CONTINUATION frames")
        self._block.append(payload)
        self._block_frames += 1
        if self._block_frames > 32 or sum(map(len, self._block)) > (
            self._limits.max_header_list_size << 2
        ):
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            block = b"".join(self._block)
            self._block_id, self._block = 0, []
            self._on_header_block(self._block_flags, stream_id, block)

    def _on_header_block(self, flags: int, stream_id: int, block: bytes) -> None:
        cached = self._head_cache.get(block)
        if cached is not None and cached[0] == self._decoder.generation:
            head = cached[1]
        else:
            limit = self._limits.max_header_list_size
            try:
                headers, pure, size = self._decoder.decode(block, limit)
            except HeaderBomb as exc:
                raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, str(exc)) from None
            head = parse_head(headers) if size <= limit else oversized(size)
            if pure and len(block) <= _HEAD_CACHE_BLOCK:
                cost = len(block) + head.size
                if self._head_cache_bytes + cost > _HEAD_CACHE_BYTES:
                    self._head_cache.clear()
                    self._head_cache_bytes = 0
                self._head_cache[block] = (self._decoder.generation, head)
                self._head_cache_bytes += cost
        stream = self.streams.get(stream_id)
        if stream is not None or stream_id <= self._last_id:
            if stream is None:
                raise ConnectionError_(ErrorCode.STREAM_CLOSED, "HEADERS on a closed stream")
            # Client trailers: gRPC clients send none, but they end the request.
            if not flags & f.END_STREAM or stream.remote_closed:
                self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR)
                return
            stream.remote_closed = True
            self._dispatcher.start(self, stream)
            return
        if not stream_id & 1:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "even stream id from a client")
        self._last_id = stream_id
        if self.closing or len(self.streams) >= self._limits.max_concurrent_streams:
            self._reset_stream(stream_id, ErrorCode.REFUSED_STREAM)
            return
        if head.malformed is not None:
            self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        stream = Stream(stream_id, head, self._peer_stream_window, self._limits.stream_window)
        self.streams[stream_id] = stream
        if flags & f.END_STREAM:
            stream.remote_closed = True
        if self._dispatcher.open(self, stream) and stream.remote_closed:
            self._dispatcher.start(self, stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        increment = f.unpack_u32(payload) & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW:
                raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id > self._last_id:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream")
                return
            if not increment:
                self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > f.MAX_WINDOW:
                self._reset_stream(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
                return
        if self._blocked:
            self._drain()

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(
                ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6"
            )
        if len(payload) > 6 * self._limits.max_settings_entries:
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, "too many SETTINGS parameters")
        if self._settings_seen:
            self._calm(self._nuisance, "SETTINGS frames")
        self._settings_seen = True
        window = -1
        for offset in range(0, len(payload), 6):
            key, value = f.unpack_setting(payload, offset)
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE")
                window = value  # only the last one counts: applied once, below
            elif key == f.MAX_FRAME_SIZE:
                if not f.MIN_MAX_FRAME_SIZE <= value <= f.MAX_MAX_FRAME_SIZE:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.max_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            # HEADER_TABLE_SIZE: our encoder never indexes, so its table size is moot.
        if window >= 0:
            delta = window - self._peer_stream_window
            self._peer_stream_window = window
            for stream in self.streams.values():
                stream.send_window += delta
                if stream.send_window > f.MAX_WINDOW:
                    raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
        self._owe_control()
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        if self._blocked:
            self._drain()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
        if not stream_id or stream_id > self._last_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        self._calm(self._resets, "stream resets")
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._drop(stream)


def _unpad(payload: bytes) -> bytes:
    """A padded frame's content (§6.1): the padding length must fit in the frame."""
    if not payload:
        raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "padded frame without pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
