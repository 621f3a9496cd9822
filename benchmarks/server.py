"""Serve the demo ONNX forest and drive it with wrk: requests/s, p50 and p99 per concurrency.

The server is pinned to core 0 and wrk to core 1 (``taskset``), V2 JSON, one
20-feature row per request unless ``--rows`` says otherwise. The server's answer
is checked against onnxruntime in process before anything is timed. wrk is
driven by :func:`load.run_wrk`, as in ``make bench``.

    make bench-quick                # or: .venv/bin/python benchmarks/server.py --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from load import run_wrk  # noqa: E402

from inferline.cli.demo import N_FEATURES, write_demo_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")


def request_body(rows: np.ndarray) -> bytes:
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": list(rows.shape),
        "data": rows.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def post(url: str, body: bytes) -> Any:
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("server exited before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become ready")


def check_answer(url: str, model_file: Path, rows: np.ndarray) -> None:
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": rows})
    outputs = {o["name"]: o["data"] for o in post(url, request_body(rows))["outputs"]}
    np.testing.assert_array_equal(outputs["label"], label)
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]).reshape(probabilities.shape), probabilities, rtol=1e-6
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per concurrency level")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="server setting, e.g. INFERLINE_REQUEST_LOG=off (repeatable)",
    )
    args = parser.parse_args()

    ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="inferline-bench-"))
    model_file = write_demo_model(work / "models")
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    command = [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-m",
        "inferline",
        "serve",
        "--model-dir",
        str(work / "models"),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--log-level",
        "warning",
        "--workers",
        str(args.workers),
    ]
    if args.workers > 1:
        command = command[3:]  # several workers share both cores
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in args.server_env)
    env.setdefault("INFERLINE_HOME", str(work / "home"))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_ready(base, process)
        url = f"{base}/v2/models/demo/infer"
        rows = np.random.default_rng(0).normal(size=(args.rows, N_FEATURES)).astype(np.float32)
        check_answer(url, model_file, rows)
        results = []
        for connections in (int(c) for c in args.connections.split(",")):
            result = run_wrk(url, request_body(rows), connections, args.duration, process.pid)
            results.append({"connections": connections, **result.as_dict()})
        print(
            f"\ninferline, demo ONNX forest, {args.rows} row(s)/request, "
            f"{args.workers} worker(s), wrk {args.duration}s {' '.join(args.server_env)}"
        )
        # errors: non-2xx answers plus socket errors (connect, read, write, timeout).
        print(f"{'connections':>11} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>8}")
        for r in results:
            print(
                f"{r['connections']:>11} {r['rps']:>10.0f} {r['p50_ms']:>8.3f} "
                f"{r['p99_ms']:>8.2f} {r['errors']:>8}"
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
