"""CPU per request through inferline's REST app, in process, with observability off and on.

Calls the ASGI app the server runs (``build_server_app``: lifespan, raw infer
route, data plane, the demo ONNX forest, observers) with a V2 JSON request of
one row, 16 requests per event-loop turn, and reports process CPU time per
request (the payload writer's thread included) for three configurations. No
HTTP server and no load generator: what is left is inferline's own path, and
CPU time is far less disturbed by other load than a req/s figure. uvicorn's
HTTP handling (about 30 us a request here, see the hello-world row of
``make bench``) comes on top.

    [PER_TURN=16] .venv/bin/python benchmarks/app_path.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from models import bench_rows, train  # noqa: E402

from inferline.monitoring.logs import configure_logging  # noqa: E402
from inferline.server import _tune_gc as tune_gc  # noqa: E402
from inferline.server import build_server_app  # noqa: E402
from inferline.settings import Settings  # noqa: E402

#: Requests started per event-loop turn. Under load a server turn often holds one
#: or two, so per-turn costs (a flush, a write) weigh more than at 16:
#: ``PER_TURN=1`` shows them.
PER_TURN = int(os.environ.get("PER_TURN", "16"))

CONFIGS: dict[str, dict[str, Any]] = {
    "all off": {
        "metrics": False,
        "request_log": "off",
        "monitoring": {"enabled": False},
    },
    "defaults (metrics, request log, monitor)": {},
    "defaults + payload log 100%": {"payload_log": "file"},
}


async def per_request(settings: Settings, body: bytes, count: int) -> float:
    app = build_server_app(settings)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/forest/infer",
        "raw_path": b"/v2/models/forest/infer",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "app": app,
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async with app.router.lifespan_context(app):
        for _ in range(200):  # warm-up: caches, first-use paths
            await app(dict(scope), receive, send)
        tune_gc()  # as `inferline serve` does before it answers
        started = time.process_time()
        for _ in range(0, count, PER_TURN):
            await asyncio.gather(*(app(dict(scope), receive, send) for _ in range(PER_TURN)))
        elapsed = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inferline-app-path-"))
    models = train(work / "artifacts")
    folder = work / "models" / "forest" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(models.files["forest"].read_bytes())
    (folder.parent / "model-settings.yaml").write_text("runtime: onnx\n")
    rows = bench_rows("forest", 1)
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "data": rows.ravel().tolist(),
                }
            ]
        }
    )
    configure_logging("info")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115
    figures: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, overrides in CONFIGS.items():
            settings = Settings.model_validate(
                {
                    "model_dir": work / "models",
                    "home": work / "home",
                    "grpc_port": None,
                    "payload_log_dir": work / "payloads",
                    **overrides,
                }
            )
            figures[name].append(asyncio.run(per_request(settings, body, args.requests)))
    base = statistics.median(figures["all off"])
    print(f"CPU per request in process, median of {args.rounds} rounds of {args.requests:,}:")
    for name, values in figures.items():
        cost = statistics.median(values)
        print(f"  {name:42s} {cost:7.1f} us  (+{cost - base:5.1f} us over all off)")


if __name__ == "__main__":
    main()
