"""A raw HTTP/2 client over asyncio streams, for poking the native gRPC server by hand.

It writes whatever frames a test asks for (valid or not) and reads the
server's frames back, so tests can check the exact HTTP/2 error the server
answers with. Header blocks are encoded by the ``hpack`` package, not by the
server's own code, so an encoder bug cannot hide a decoder bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import NamedTuple

import hpack

from inferline.transport.grpc_h2 import frames as f

PREFACE = f.PREFACE


class Frame(NamedTuple):
    kind: int
    flags: int
    stream_id: int
    payload: bytes


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return f.frame(kind, flags, stream_id, payload)


def grpc_message(body: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + struct.pack(">I", len(body)) + body


def request_headers(
    path: str = "/grpc.health.v1.Health/Check",
    content_type: str = "application/grpc",
    extra: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", content_type),
        ("te", "trailers"),
        *(extra or []),
    ]


class RawClient:
    """One connection; ``frames`` read so far, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 4096
        self.frames: list[Frame] = []

    @classmethod
    async def connect(
        cls, address: str, *, preface: bool = True, settings: bytes | None = None
    ) -> RawClient:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        client = cls(reader, writer)
        if preface:
            client.send(PREFACE + (settings if settings is not None else f.settings({})))
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def headers(
        self, stream_id: int, headers: list[tuple[str, str]], *, end_stream: bool = False
    ) -> None:
        block = self.encoder.encode(headers)
        flags = f.END_HEADERS | (f.END_STREAM if end_stream else 0)
        self.send(frame(f.HEADERS, flags, stream_id, block))

    def data(self, stream_id: int, payload: bytes, *, end_stream: bool = True) -> None:
        self.send(frame(f.DATA, f.END_STREAM if end_stream else 0, stream_id, payload))

    async def read_frame(self) -> Frame | None:
        """The next frame, or None at EOF; SETTINGS from the server are acked."""
        try:
            head = await self.reader.readexactly(9)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        high, low, kind, flags, stream_id = f.HEADER.unpack(head)
        try:
            payload = await self.reader.readexactly((high << 8) | low)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        got = Frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
        self.frames.append(got)
        if kind == f.SETTINGS and not flags & f.ACK:
            self.send(frame(f.SETTINGS, f.ACK, 0))
        return got

    async def read_until(self, kind: int, stream_id: int | None = None, limit: int = 200) -> Frame:
        """Frames up to the first of ``kind`` (on ``stream_id``); fails at EOF."""
        for _ in range(limit):
            got = await asyncio.wait_for(self.read_frame(), 10)
            if got is None:
                raise AssertionError(f"EOF before frame type {kind}; got {self.frames}")
            if got.kind == kind and (stream_id is None or got.stream_id == stream_id):
                return got
        raise AssertionError(f"no frame type {kind} in {limit} frames")

    async def goaway(self, limit: int = 200) -> tuple[int, int]:
        """(last stream id, error code) of the server's GOAWAY (within ``limit`` frames);
        then the connection ends."""
        got = await self.read_until(f.GOAWAY, limit=limit)
        last, code = struct.unpack(">II", got.payload[:8])
        for _ in range(1000):
            if await asyncio.wait_for(self.read_frame(), 10) is None:
                break
        else:
            raise AssertionError("the connection stayed open after GOAWAY")
        return last, code

    async def response(self, stream_id: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, DATA bytes, trailers) of one stream; trailers-only gives headers == {}."""
        blocks: list[dict[str, str]] = []
        body, block, ended = b"", b"", False
        for _ in range(10_000):
            got = await asyncio.wait_for(self.read_frame(), 10)
            if got is None:
                raise AssertionError(f"EOF in stream {stream_id}: {self.frames}")
            if got.stream_id != stream_id:
                continue
            if got.kind == f.RST_STREAM:
                code = struct.unpack(">I", got.payload)[0]
                raise AssertionError(f"stream {stream_id} reset with {code}")
            if got.kind == f.DATA:
                body += got.payload
            elif got.kind in (f.HEADERS, f.CONTINUATION):
                block += got.payload
                if got.flags & f.END_HEADERS:
                    blocks.append(dict(self.decoder.decode(block, raw=False)))
                    block = b""
            if got.kind != f.CONTINUATION and got.flags & f.END_STREAM:
                ended = True
            if ended and not block:
                break
        if len(blocks) == 1:
            return {}, body, blocks[0]
        return blocks[0], body, blocks[-1]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
