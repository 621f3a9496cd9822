"""Profile inferline's hot path under wrk load: py-spy (sampling) or pyinstrument.

The server runs pinned to core 0 on its default settings, wrk on core 1 (ONNX
forest, V2 JSON, 1 row, 64 connections unless told otherwise). Prints the top
functions by own time and by total time (py-spy), or pyinstrument's call tree.

    .venv/bin/python benchmarks/profile.py [--tool pyinstrument] [--rows 64 --connections 4]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import WORK, free_port, wait_ready  # noqa: E402
from load import Result, grpc_body, run_h2load, run_wrk  # noqa: E402
from models import bench_rows, train  # noqa: E402
from peers import PEERS, Layout  # noqa: E402


def top(collapsed: Path, count: int, every_thread: bool = False) -> list[str]:
    """Own and total sample shares per function from py-spy's collapsed stacks.

    Only the event loop's thread counts (stacks through ``_run_module_as_main``):
    idle executor threads would otherwise fill the top.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not every_thread and "_run_module_as_main" not in stack:
            continue
        frames = [_short(f) for f in stack.split(";")]
        weight = int(n)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    which = "every thread" if every_thread else "the event loop's thread"
    lines = [f"{samples} samples of {which}", "", "own time:"]
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(count)]
    lines += ["", "total time (function and what it calls):"]
    # Frames on every stack (runpy, typer, uvloop.run) say nothing: leave them out.
    below = [(f, n) for f, n in total.most_common() if n < 0.97 * samples]
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in below[:count]]
    return lines


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``fn (module.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for marker in ("site-packages", "inferline"):
        if marker in parts:
            path = "/".join(parts[parts.index(marker) + (marker == "site-packages") :])
            break
    return f"{name} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=["py-spy", "pyinstrument"], default="py-spy")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--model", default="forest")
    parser.add_argument("--grpc", action="store_true", help="drive gRPC with h2load instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="py-spy: include C frames")
    parser.add_argument(
        "--every-thread", action="store_true", help="py-spy: count executor threads too"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="inferline server setting or environment, e.g. INFERLINE_REQUEST_LOG=off",
    )
    parser.add_argument("--output", type=Path, default=WORK / "profile")
    args = parser.parse_args()

    tool = Path(sys.executable).parent / args.tool
    if not tool.exists():
        raise SystemExit(f"{args.tool} is needed: {sys.executable} -m pip install {args.tool}")
    peer = PEERS["inferline"]
    folder = WORK / "run" / "profile"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    models = train(WORK / "models")
    env = dict(item.split("=", 1) for item in args.server_env)
    layout = Layout(
        Path(sys.executable).parent.parent,
        folder,
        folder / "models",
        free_port(),
        free_port(),
        {"env": env},
    )
    peer.prepare(layout, models.files)
    args.output.mkdir(parents=True, exist_ok=True)
    command = peer.command(layout)
    report = args.output / ("pyinstrument.txt" if args.tool == "pyinstrument" else "py-spy.txt")
    if args.tool == "pyinstrument":
        command = [
            command[0],
            "-m",
            "pyinstrument",
            "--renderer",
            "text",
            "-o",
            str(report),
            *command[1:],
        ]
    log = (args.output / "server.log").open("wb")
    server = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        env=peer.env(layout),
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{layout.http_port}/v2/health/ready", server)
        rows = bench_rows(args.model, args.rows)
        url, body = peer.url(layout, args.model), peer.body(args.model, rows)
        address = f"127.0.0.1:{layout.grpc_port}"

        def drive(seconds: int) -> Result:
            if args.grpc:
                return run_h2load(
                    address, grpc_body(args.model, rows), args.connections, seconds, server.pid
                )
            return run_wrk(url, body, args.connections, seconds, server.pid)

        drive(2)  # warm up
        spy = None
        collapsed = args.output / "py-spy.collapsed"
        if args.tool == "py-spy":
            spy_command = ["taskset", "-c", "1", str(Path(sys.executable).parent / "py-spy")]
            spy_command += ["record", "--pid", str(server.pid), "--format", "raw", "--rate", "250"]
            spy_command += ["--duration", str(args.duration), "-o", str(collapsed)]
            spy = subprocess.Popen(
                spy_command + (["--native"] if args.native else []), stdout=subprocess.DEVNULL
            )
            time.sleep(0.5)
        result = drive(args.duration)
        print(
            f"under profile: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, {result.cpu_us:.0f} us CPU/request, "
            f"other load {result.other_cores:.2f}, load average {os.getloadavg()[0]:.2f}"
        )
        if spy is not None:
            spy.wait(timeout=60)
            lines = top(collapsed, args.top, args.every_thread)
            report.write_text("\n".join(lines) + "\n")
    finally:
        # SIGINT: uvicorn shuts down and re-raises it as KeyboardInterrupt, which lets
        # pyinstrument write its report (a re-raised SIGTERM would end the process first).
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        log.close()
    print(report.read_text())
    print(f"(written to {report})")


if __name__ == "__main__":
    main()
