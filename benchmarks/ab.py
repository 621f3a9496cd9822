"""Interleaved A/B of inferline server configurations: CPU per request, side by side.

On a host whose speed drifts by a third within minutes, two benchmark runs one
after the other cannot tell apart effects under about 20 %. Here every
configuration runs at once (all pinned to core 0, idle but for their turn) and
wrk (core 1) drives them in turn, a few seconds each, the order reversed every
round, so the drift falls on all of them alike. Reports the median server CPU
per request and req/s of each, ONNX forest, V2 JSON, one row, 64 connections.
With ``--grpc`` each server is also driven over gRPC (h2load, the same request as
raw contents) in the same interleaving: REST against gRPC on one server.

    .venv/bin/python benchmarks/ab.py off=INFERLINE_METRICS=false,INFERLINE_REQUEST_LOG=off \\
        defaults= [--rounds 6 --seconds 4] [--grpc]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import WORK, free_port, running  # noqa: E402
from load import Result, grpc_body, run_h2load, run_wrk  # noqa: E402
from models import bench_rows, train  # noqa: E402
from peers import PEERS, Layout  # noqa: E402
from peers._base import v2_body  # noqa: E402


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """``name=KEY=VALUE,KEY=VALUE`` (``name=`` for the defaults)."""
    name, _, rest = spec.partition("=")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="name=KEY=VALUE,... (name= for defaults)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--grpc", action="store_true", help="also drive each server over gRPC")
    args = parser.parse_args()
    configs = [parse(spec) for spec in args.configs]
    models = train(WORK / "models")
    rows = bench_rows("forest", 1)
    body, message = v2_body(rows), grpc_body("forest", rows)
    peer = PEERS["inferline"]
    venv = peer.ensure_venv(WORK / "venvs", WORK / "logs" / "install-inferline.log")
    kinds = ["rest", "grpc"] if args.grpc else ["rest"]
    labels = [
        f"{name or 'defaults'}{'' if kind == 'rest' else ' (gRPC)'}"
        for name, _ in configs
        for kind in kinds
    ]
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    rps: dict[str, list[float]] = {label: [] for label in labels}

    def drive(kind: str, url: str, address: str, pid: int) -> Result:
        if kind == "grpc":
            return run_h2load(address, message, args.connections, args.seconds, pid)
        return run_wrk(url, body, args.connections, args.seconds, pid)

    with contextlib.ExitStack() as stack:
        servers = []
        for name, env in configs:
            folder = WORK / "ab" / name
            layout = Layout(venv, folder, folder / "models", free_port(), free_port(), {"env": env})
            folder.mkdir(parents=True, exist_ok=True)
            peer.prepare(layout, models.files)
            process = stack.enter_context(
                running(peer, layout, log_name=f"ab-{name or 'defaults'}")
            )
            url = f"http://127.0.0.1:{layout.http_port}/v2/models/forest/infer"
            address = f"127.0.0.1:{layout.grpc_port}"
            for kind in kinds:
                label = f"{name or 'defaults'}{'' if kind == 'rest' else ' (gRPC)'}"
                servers.append((label, kind, url, address, process.pid))
        for _label, kind, url, address, pid in servers:  # warm-up: caches, windows filling
            drive(kind, url, address, pid)
        for round_ in range(args.rounds):
            for label, kind, url, address, pid in servers if round_ % 2 == 0 else servers[::-1]:
                result = drive(kind, url, address, pid)
                cpu[label].append(result.cpu_us)
                rps[label].append(result.rps)
    print(f"median of {args.rounds} interleaved rounds of {args.seconds} s:")
    for label in labels:
        spread = ", ".join(f"{value:.0f}" for value in cpu[label])
        print(
            f"  {label:27s} {statistics.median(cpu[label]):6.1f} us/request "
            f"{statistics.median(rps[label]):8,.0f} req/s   (cpu per round: {spread})"
        )


if __name__ == "__main__":
    main()
