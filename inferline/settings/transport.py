"""Connection limits of the REST (HTTP/1.1) and native gRPC (HTTP/2) transports.

What a hostile or broken client may cost the server: the budgets and timeouts
mature servers have (nghttp2, h2o, grpc-go, hypercorn), as settings. Nested under
``limits`` (``INFERLINE_LIMITS__MAX_CONNECTIONS=20000``); see docs/security.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConnectionLimits(BaseModel):
    """Per-connection budgets, timeouts and process-wide caps of both transports."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_connections: int = Field(default=10_000, ge=1)
    """Open connections per process and transport; past it a new REST connection gets
    503 and a new gRPC connection GOAWAY (ENHANCE_YOUR_CALM), then each is closed."""
    head_timeout: float = Field(default=10.0, gt=0)
    """Seconds a REST connection may take to send a complete request head (from the
    connection, or from the first byte of a later request); then 408 (or a plain close
    if nothing was sent) and the connection is closed."""
    handshake_timeout: float = Field(default=10.0, gt=0)
    """Seconds a gRPC connection may take to send the HTTP/2 preface and its SETTINGS."""
    frame_timeout: float = Field(default=30.0, gt=0)
    """Seconds a gRPC connection may send nothing while it owes bytes (a frame begun,
    a header block without its end, a request message not complete); then GOAWAY."""
    idle_timeout: float = Field(default=300.0, gt=0)
    """Seconds a gRPC connection may stay open with no stream open (PINGs do not
    count); then GOAWAY (NO_ERROR) and close, as grpc-go's MaxConnectionIdle."""
    write_buffer_bytes: int = Field(default=256 * 1024, ge=4096)
    """Answer bytes a connection may have queued for a client that does not read;
    past it the server stops reading from that client until the queue drains."""
    grpc_reset_burst: int = Field(default=1000, ge=1)
    """Streams a gRPC client may reset (RST_STREAM) in a burst; past the budget the
    connection gets GOAWAY (ENHANCE_YOUR_CALM): the rapid-reset attack (CVE-2023-44487)."""
    grpc_reset_rate: float = Field(default=33.0, ge=0)
    """Client stream resets per second added back to the burst budget (nghttp2's 33)."""
    grpc_control_burst: int = Field(default=1000, ge=1)
    """PING, SETTINGS, PRIORITY, empty DATA/CONTINUATION and unknown frames a gRPC
    client may send in a burst; past it GOAWAY (ENHANCE_YOUR_CALM)."""
    grpc_control_rate: float = Field(default=100.0, ge=0)
    """Such frames per second added back to the burst budget."""
    grpc_max_queued_control: int = Field(default=1000, ge=1)
    """Control frames (PING and SETTINGS acks, RST_STREAM) the server may have queued,
    unsent, for a client; more is GOAWAY (ENHANCE_YOUR_CALM), as nghttp2."""
    grpc_max_settings_entries: int = Field(default=32, ge=6)
    """Parameters in one SETTINGS frame; more is GOAWAY (ENHANCE_YOUR_CALM)."""
    grpc_max_header_list_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest request header list (HTTP/2 counting: name + value + 32 per field),
    enforced while decoding; more is answered HTTP 431."""
    grpc_buffered_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    """Request bytes (gRPC messages still arriving or not yet handed to a handler) all
    connections of a process may hold; a message that would pass it is answered
    RESOURCE_EXHAUSTED as soon as its length prefix arrives."""
