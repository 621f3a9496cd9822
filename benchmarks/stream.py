"""Stream inference through Redis Streams: messages/s and end-to-end latency.

Three consumers, each in its own process, read the same kind of stream (the demo
ONNX forest's 20 float32 features as one entry field) and write one result per
message:

- raw: an XREADGROUP / XADD / XACK loop with no model and no parsing, the ceiling;
- embedded: ``inferline stream demo`` (the model in the consumer);
- enricher: ``inferline stream demo --enrich`` against ``inferline serve`` (only when
  ``inferline.client`` is installed).

Throughput: ``--messages`` entries are added first, then the consumer drains them;
messages/s is that count over the time from its first to its last result. Latency:
entries are then added at ``--rate`` per second for ``--seconds``; end-to-end latency
is the result entry's id time minus the input's (both Redis's clock, millisecond
resolution), reported as p50 and p99.

    .venv/bin/python benchmarks/stream.py [--messages 50000] [--rate 2000] [--seconds 5]
    .venv/bin/python benchmarks/stream.py --messages 2000 --seconds 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferline.cli.demo import N_FEATURES, write_demo_model  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"


def raw_worker(source: str, sink: str, group: str, batch: int) -> None:
    """The ceiling: read, write one result per entry and ack in one pipeline, no model."""
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    while True:
        reply = client.xreadgroup(group, "raw", {source: ">"}, count=batch, block=500)
        if not reply:
            continue
        entries = reply[0][1]
        with client.pipeline(transaction=True) as pipe:
            for _, fields in entries:
                pipe.xadd(sink, {"id": fields["id"], "label": "0"})
            pipe.xack(source, group, *[entry_id for entry_id, _ in entries])
            pipe.execute()


def _fill(client: Any, source: str, rows: np.ndarray, start: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        for i, row in enumerate(rows):
            pipe.xadd(source, {"id": str(start + i), "input": json.dumps(row.tolist())})
        pipe.execute()


def _millis(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def measure(name: str, command: list[str], args: argparse.Namespace, tag: str) -> dict[str, Any]:
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    source, sink, group = f"bench-tx-{tag}", f"bench-scores-{tag}", f"bench-{tag}"
    client.xgroup_create(source, group, id="0", mkstream=True)
    rows = np.random.default_rng(0).normal(size=(args.messages, N_FEATURES)).astype(np.float32)
    _fill(client, source, rows.round(5), 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [*command, "--source", f"{REDIS}?stream={source}", "--sink", f"{REDIS}?stream={sink}",
         "--group", group, "--batch-size", str(args.batch_size)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while client.xlen(sink) < args.messages:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: consumer stopped or stalled")
            time.sleep(0.05)
        first = client.xrange(sink, count=1)[0][0]
        last = client.xrevrange(sink, count=1)[0][0]
        seconds = max(_millis(last) - _millis(first), 1) / 1000
        throughput = args.messages / seconds
        # Latency at a steady rate below saturation.
        done = client.xlen(sink)
        sent = 0
        interval = 0.01
        per_tick = max(1, int(args.rate * interval))
        started = time.monotonic()
        latency_rows = np.random.default_rng(1).normal(size=(per_tick, N_FEATURES))
        marker = client.xrevrange(sink, count=1)[0][0]
        while time.monotonic() - started < args.seconds:
            _fill(client, source, latency_rows.astype(np.float32).round(5), args.messages + sent)
            sent += per_tick
            time.sleep(max(0.0, started + sent / args.rate - time.monotonic()))
        while client.xlen(sink) < done + sent:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: consumer stopped or stalled")
            time.sleep(0.05)
        produced = {
            fields["id"]: _millis(entry_id)
            for entry_id, fields in client.xrange(source, min=f"({marker}")
        }
        latencies = [
            _millis(entry_id) - produced[fields["id"]]
            for entry_id, fields in client.xrange(sink, min=f"({marker}")
            if fields["id"] in produced
        ]
        p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
        return {"consumer": name, "msg_per_s": round(throughput), "p50_ms": p50, "p99_ms": p99}
    finally:
        process.terminate()
        process.wait(timeout=60)
        client.delete(source, sink, f"{source}-dead")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=2_000, help="messages/s for latency")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency phase length")
    parser.add_argument("--batch-size", type=int, default=64)
    # The raw consumer is this script again, given the flags ``inferline stream`` takes.
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        stream = "stream="
        raw_worker(
            args.source.split(stream)[1], args.sink.split(stream)[1], args.group, args.batch_size
        )
        return
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder)
        write_demo_model(models)
        runs = [
            ("raw", [sys.executable, __file__, "--raw"]),
            ("embedded", [sys.executable, "-m", "inferline", "stream", "demo",
                          "--model-dir", str(models)]),
        ]  # fmt: skip
        results = [measure(name, command, args, f"{tag}-{name}") for name, command in runs]
    try:
        import inferline.client  # noqa: F401
    except ImportError:
        print("enricher: skipped (inferline.client is not installed)")
    ceiling = results[0]["msg_per_s"]
    print(f"{'consumer':<10} {'msg/s':>9} {'of raw':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for row in results:
        share = row["msg_per_s"] / ceiling if ceiling else float("nan")
        print(
            f"{row['consumer']:<10} {row['msg_per_s']:>9} {share:>7.0%} "
            f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
        )


if __name__ == "__main__":
    main()
