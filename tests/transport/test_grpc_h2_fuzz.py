"""Property tests of the native server's HPACK decoder and frame reader.

The decoder is checked against the ``hpack`` package's encoder (a second,
independent implementation): whatever header lists it encodes, across blocks
that share one dynamic table, must decode to the same lists. Arbitrary bytes
must only ever raise ``HpackError``. The connection is fed arbitrary frame
sequences and must never let an exception escape or write a malformed frame.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.dataplane import DataPlane
from inferline.protocols.grpc_native import Dispatcher
from inferline.protocols.v2_grpc import GrpcService
from inferline.settings import Settings
from inferline.transport.grpc_h2 import frames as f
from inferline.transport.grpc_h2.connection import Connection
from inferline.transport.grpc_h2.frames import Limits
from inferline.transport.grpc_h2.hpack import Decoder, HpackError

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=20)
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
HEADERS = st.lists(
    st.one_of(
        st.tuples(NAMES, VALUES),
        st.sampled_from([(":method", "POST"), (":path", "/a/b"), ("content-type", "x")]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(st.tuples(HEADERS, st.booleans()), min_size=1, max_size=6),
    table_size=st.sampled_from([0, 64, 256, 4096]),
)
def test_decoder_agrees_with_the_hpack_package(
    blocks: list[tuple[list[tuple[str, str]], bool]], table_size: int
) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size  # emits a size update in the next block
    decoder = Decoder()
    for headers, huffman in blocks:
        block = encoder.encode(headers, huffman=huffman)
        decoded, _, _ = decoder.decode(block)
        assert decoded == headers


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_only_raises_hpack_error(data: bytes) -> None:
    decoder = Decoder()
    try:
        headers, _, _ = decoder.decode(data)
    except HpackError:
        return
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in headers)


class Transport(asyncio.Transport):
    """Records what the connection writes (the fuzz test has no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is taken at once


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Parse what the server wrote; fails on a frame that does not fit."""
    out, pos = [], 0
    while pos < len(data):
        high, low, kind, flags, stream_id = f.HEADER.unpack_from(data, pos)
        size = (high << 8) | low
        assert pos + 9 + size <= len(data), "truncated frame written"
        out.append((kind, flags, stream_id, data[pos + 9 : pos + 9 + size]))
        pos += 9 + size
    return out


FRAME = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x42]),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 + 1]),
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                hpack.Encoder().encode(
                    [
                        (":method", "POST"),
                        (":scheme", "http"),
                        (":path", "/grpc.health.v1.Health/Check"),
                        ("content-type", "application/grpc"),
                    ]
                ),
                b"\0\0\0\0\0",
                b"\0\0\0\0\x10",
            ]
        ),
    ),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> GrpcService:
    home = tmp_path_factory.mktemp("fuzz")
    return GrpcService(DataPlane(Settings(model_dir=Path(home), home=home)))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(FRAME, max_size=12), cut=st.integers(1, 50))
def test_connection_survives_any_frames(
    service: GrpcService,
    caplog: pytest.LogCaptureFixture,
    frames: list[tuple[int, int, int, bytes]],
    cut: int,
) -> None:
    async def run() -> Transport:
        limits = Limits(1024, max_concurrent_streams=4)
        conn = Connection(Dispatcher(service, 1024, limits.max_header_list_size), limits, id)
        transport = Transport()
        conn.connection_made(transport)
        wire = f.PREFACE + f.settings({}) + b"".join(f.frame(*frame) for frame in frames)
        for start in range(0, len(wire), cut):  # in pieces, as TCP may deliver it
            conn.data_received(wire[start : start + cut])
        for _ in range(5):
            await asyncio.sleep(0)
        conn.connection_lost(None)
        await asyncio.sleep(0)
        return transport

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="inferline.transport.grpc_h2"):
        transport = asyncio.run(run())
    assert not [r for r in caplog.records if r.name.startswith("inferline.transport.grpc_h2")]
    written = frames_of(bytes(transport.written))
    assert written[0][0] == f.SETTINGS
    goaways = [frame for frame in written if frame[0] == f.GOAWAY]
    assert len(goaways) <= 1
    if goaways:
        assert transport.closed and written[-1][0] == f.GOAWAY
