"""inferline's HTTP/1.1 protocol against uvicorn's, in process: cost per request.

Both protocols are fed the same requests (a 300-byte POST, 16 connections per
loop turn) through a transport that only counts writes, and run the same
minimal ASGI app, so what differs is the protocol's own work. Reports CPU time
per request, or with ``--instructions`` the instructions per request counted
by callgrind (two runs of different lengths, subtracted: start-up cancels), a
figure the host's drift does not move.

    .venv/bin/python benchmarks/http1_protocol.py [--requests 160000]
    .venv/bin/python benchmarks/http1_protocol.py --instructions   # needs valgrind
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import uvicorn  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from inferline.transport.http1 import HttpProtocol  # noqa: E402

PROTOCOLS: dict[str, Any] = {"uvicorn": HttpToolsProtocol, "inferline": HttpProtocol}
ANSWER = b'{"model_name":"forest","outputs":[]}'
REQUEST = (
    b"POST /v2/models/forest/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Content-Type: application/json\r\nContent-Length: 300\r\n\r\n" + b"x" * 300
)
CONNECTIONS = 16


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def drive(protocol_class: Any, requests: int) -> tuple[float, float]:
    """CPU seconds per request and writes per request."""
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None)
    state = ServerState()
    connections = []
    for _ in range(CONNECTIONS):
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = CountingTransport()
        protocol.connection_made(transport)
        connections.append((protocol, transport))
    turns = requests // CONNECTIONS
    started = time.process_time()
    for _ in range(turns):
        for protocol, _transport in connections:
            protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the apps run
        await asyncio.sleep(0)
    elapsed = time.process_time() - started
    writes = sum(transport.writes for _, transport in connections)
    for protocol, _ in connections:
        protocol.connection_lost(None)
    done = turns * CONNECTIONS
    return elapsed / done, writes / done


def instructions(name: str) -> float:
    """Instructions per request under callgrind: runs of 2,000 and 6,000 requests."""
    counts = []
    for requests in (2_000, 6_000):
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--only",
                name,
                "--requests",
                str(requests),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(r"Collected : (\d+)", run.stderr)
        if found is None:
            raise SystemExit(f"no callgrind total in:\n{run.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / 4_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=160_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--only", choices=list(PROTOCOLS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:  # one run, under callgrind
        asyncio.run(drive(PROTOCOLS[args.only], args.requests))
        return
    if args.instructions:
        for name in PROTOCOLS:
            print(f"  {name:10s} {instructions(name):10,.0f} instructions/request")
        return
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in PROTOCOLS}
    for _ in range(args.rounds):  # interleaved, so drift falls on both
        for name, protocol_class in PROTOCOLS.items():
            figures[name].append(asyncio.run(drive(protocol_class, args.requests)))
    print(f"in process, best of {args.rounds} interleaved rounds of {args.requests:,}:")
    for name, runs in figures.items():
        seconds, writes = min(runs)
        print(f"  {name:10s} {seconds * 1e6:6.2f} us/request, {writes:.0f} write(s)/request")


if __name__ == "__main__":
    main()
