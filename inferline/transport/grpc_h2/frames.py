"""HTTP/2 frame constants and writers (RFC 9113 §4, §6), for the native gRPC server.

Only what a server that answers gRPC needs: every frame a client may send is
named here so the reader can check its fixed sizes; the writers build whole
frames as bytes so a response can go out in one ``transport.write``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from inferline.settings.transport import ConnectionLimits

if TYPE_CHECKING:
    from inferline.settings import Settings

__all__ = [
    "PREFACE",
    "ErrorCode",
    "Limits",
    "frame",
    "goaway",
    "headers_frames",
    "rst_stream",
    "settings",
    "window_update",
]

#: What every client connection starts with (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (§6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS parameters (§6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

#: Largest flow-control window (§6.9.1).
MAX_WINDOW = 2**31 - 1
#: MAX_FRAME_SIZE bounds (§6.5.2).
MIN_MAX_FRAME_SIZE = 16_384
MAX_MAX_FRAME_SIZE = 2**24 - 1

HEADER = struct.Struct(">HBBBL")  # length (high 16 bits, low 8 bits), type, flags, stream id
_U32 = struct.Struct(">L")
_U32X2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


_DEFAULTS = ConnectionLimits()


class ErrorCode:
    """HTTP/2 error codes (§7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header, then ``payload``."""
    size = len(payload)
    return HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def header(kind: int, flags: int, stream_id: int, size: int) -> bytes:
    """A frame header alone, for a payload written next to it."""
    return HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame: streams above ``last_stream_id`` were not processed."""
    return frame(GOAWAY, 0, 0, _U32X2.pack(last_stream_id, code) + debug)


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (+ CONTINUATION frames when ``block`` is bigger than one frame)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    for part in parts[1:-1]:
        out.append(frame(CONTINUATION, 0, stream_id, part))
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


def unpack_u32(data: bytes, offset: int = 0) -> int:
    """A 32-bit big-endian value."""
    return int(_U32.unpack_from(data, offset)[0])


def unpack_setting(data: bytes, offset: int) -> tuple[int, int]:
    """One (identifier, value) pair of a SETTINGS payload."""
    key, value = _SETTING.unpack_from(data, offset)
    return int(key), int(value)


class Limits:
    """What the server advertises and enforces; one instance shared by its connections.

    The defaults are :class:`~inferline.settings.ConnectionLimits`'s; ``from_settings``
    reads a server's. ``pool`` counts the request bytes all connections hold.
    """

    __slots__ = (
        "buffer_cap",
        "conn_window",
        "control_burst",
        "control_rate",
        "frame_timeout",
        "handshake_timeout",
        "idle_timeout",
        "max_concurrent_streams",
        "max_connections",
        "max_frame_size",
        "max_header_list_size",
        "max_message",
        "max_queued_control",
        "max_settings_entries",
        "pool",
        "reset_burst",
        "reset_rate",
        "stream_window",
        "write_buffer",
    )

    def __init__(
        self,
        max_message: int,
        *,
        max_concurrent_streams: int = 1000,
        stream_window: int = 1 << 20,
        conn_window: int = 16 << 20,
        max_frame_size: int = 1 << 16,
        max_header_list_size: int = _DEFAULTS.grpc_max_header_list_bytes,
        max_connections: int = _DEFAULTS.max_connections,
        handshake_timeout: float = _DEFAULTS.handshake_timeout,
        frame_timeout: float = _DEFAULTS.frame_timeout,
        idle_timeout: float = _DEFAULTS.idle_timeout,
        write_buffer: int = _DEFAULTS.write_buffer_bytes,
        reset_burst: int = _DEFAULTS.grpc_reset_burst,
        reset_rate: float = _DEFAULTS.grpc_reset_rate,
        control_burst: int = _DEFAULTS.grpc_control_burst,
        control_rate: float = _DEFAULTS.grpc_control_rate,
        max_queued_control: int = _DEFAULTS.grpc_max_queued_control,
        max_settings_entries: int = _DEFAULTS.grpc_max_settings_entries,
        buffered_bytes: int = _DEFAULTS.grpc_buffered_bytes,
    ) -> None:
        self.max_message = max_message
        self.max_concurrent_streams = max_concurrent_streams
        self.stream_window = stream_window
        self.conn_window = conn_window
        self.max_frame_size = max_frame_size
        self.max_header_list_size = max_header_list_size
        #: Request bytes a connection may hold before it stops replenishing its window.
        self.buffer_cap = max_message + conn_window
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.write_buffer = write_buffer
        self.reset_burst = reset_burst
        self.reset_rate = reset_rate
        self.control_burst = control_burst
        self.control_rate = control_rate
        self.max_queued_control = max_queued_control
        self.max_settings_entries = max_settings_entries
        #: Request bytes held by all connections of this server, against its cap.
        self.pool = RequestPool(buffered_bytes)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Limits:
        """The limits ``settings`` set (``grpc_max_message_bytes`` and ``limits``)."""
        limits = settings.limits
        values: dict[str, Any] = {
            "max_header_list_size": limits.grpc_max_header_list_bytes,
            "max_connections": limits.max_connections,
            "handshake_timeout": limits.handshake_timeout,
            "frame_timeout": limits.frame_timeout,
            "idle_timeout": limits.idle_timeout,
            "write_buffer": limits.write_buffer_bytes,
            "reset_burst": limits.grpc_reset_burst,
            "reset_rate": limits.grpc_reset_rate,
            "control_burst": limits.grpc_control_burst,
            "control_rate": limits.grpc_control_rate,
            "max_queued_control": limits.grpc_max_queued_control,
            "max_settings_entries": limits.grpc_max_settings_entries,
            "buffered_bytes": limits.grpc_buffered_bytes,
        }
        values.update(overrides)
        return cls(settings.grpc_max_message_bytes, **values)

    def settings_frame(self) -> bytes:
        return settings(
            {
                MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
                INITIAL_WINDOW_SIZE: self.stream_window,
                MAX_FRAME_SIZE: self.max_frame_size,
                MAX_HEADER_LIST_SIZE: self.max_header_list_size,
            }
        )


class RequestPool:
    """Request bytes held by all connections of one server, against a cap."""

    __slots__ = ("cap", "held")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held = 0
