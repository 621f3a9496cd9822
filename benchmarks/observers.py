"""CPU each observer costs per answered request, in process (issue #5's overhead budget).

Feeds the same records (a 20-feature row in, a label and two probabilities out,
as the demo forest answers) to each observer inside a running event loop, 16
requests per loop turn as a loaded server answers them, and reports the
process CPU time per record (every thread, the payload writer's included) over
an empty loop doing the same turns. CPU time, not wall time, so other load on
the machine inflates the figures less.

    .venv/bin/python benchmarks/observers.py [--records 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from inferline.monitoring.logs import RequestLog, configure_logging
from inferline.monitoring.metrics import Metrics
from inferline.monitoring.monitor import Monitor
from inferline.monitoring.payloads import FileSink, PayloadLogger
from inferline.monitoring.records import InferenceRecord
from inferline.settings import MonitoringSettings, PayloadLogSettings

PER_TURN = 16


def records(count: int) -> list[InferenceRecord]:
    rng = np.random.default_rng(0)
    outputs = {
        "label": np.array([1], dtype=np.int64),
        "probabilities": np.array([[0.25, 0.75]], dtype=np.float32),
    }
    now = time.time()
    return [
        InferenceRecord(
            f"{i:016x}",
            "forest",
            "1",
            "rest",
            now + i * 1e-4,
            0.0003,
            200,
            {"input": rng.random((1, 20), dtype=np.float32)},
            outputs,
        )
        for i in range(count)
    ]


class _Nothing:
    def observe(self, record: InferenceRecord) -> None:
        return None


async def _feed(observer: Any, batch: list[InferenceRecord], after: Callable[[], Any]) -> float:
    gc.collect()
    started = time.process_time()
    for i in range(0, len(batch), PER_TURN):
        for record in batch[i : i + PER_TURN]:
            observer.observe(record)
        await asyncio.sleep(0)
    await after()
    return (time.process_time() - started) / len(batch) * 1e6


async def measure(count: int, rounds: int) -> dict[str, float]:
    batch = records(count)

    async def nothing() -> None:
        await asyncio.sleep(0)

    folder = Path(tempfile.mkdtemp())

    async def payloads() -> float:
        # A queue that holds the whole run: this measures what recording costs, not drops.
        log = PayloadLogger(FileSink(folder, 10**10, 1), lambda m, v: PayloadLogSettings(), count)
        await log.start()
        cost = await _feed(log, batch, log.stop)
        assert log.written == count and log.dropped == 0, (log.written, log.dropped)
        return cost

    makers: dict[str, Callable[[], Any]] = {
        "metrics": lambda: Metrics(CollectorRegistry()),
        "request log": lambda: RequestLog("info"),
        "drift/quality monitor": lambda: Monitor(MonitoringSettings()),
    }
    figures: dict[str, list[float]] = {name: [] for name in ["loop alone", *makers, "payload log"]}
    for _ in range(rounds):
        figures["loop alone"].append(await _feed(_Nothing(), batch, nothing))
        for name, make in makers.items():
            figures[name].append(await _feed(make(), batch, nothing))
        figures["payload log"].append(await payloads())
    base = statistics.median(figures.pop("loop alone"))
    return {name: statistics.median(values) - base for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("info")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115
    costs = asyncio.run(measure(args.records, args.rounds))
    print(f"CPU per answered request, median of {args.rounds} rounds of {args.records:,} records:")
    for name, micros in costs.items():
        print(f"  {name:24s} {micros:6.2f} us")
    print(f"  {'all of them':24s} {sum(costs.values()):6.2f} us")


if __name__ == "__main__":
    main()
