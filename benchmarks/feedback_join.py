"""FeedbackJoin.remember, per call: the mean in ns and the worst single call.

The monitor calls ``remember`` on the event loop for every answered request, so its
worst call lands on a request's latency. This compares the join as it was (one
OrderedDict of up to ``pending`` entries, kept verbatim below) with the one in
``inferline/monitoring/quality.py``, each called the way ``Monitor.observe`` calls it.

Each call remembers a fresh request (its own outputs: an int64 label and a float32
[1, 2] probability row, as the demo forest answers) into a join already full, as on
a busy server: every call also evicts one (or frees part of a dropped generation).
The garbage collector runs as the server tunes it (``gc.freeze``, thresholds
10 000/20/20).

- mean: a plain loop, no timer per call: (outputs built + remember) minus (outputs
  built alone), over ``--calls``;
- worst, p99.9, calls over 100 µs and over 1 ms: ``time.perf_counter_ns`` around
  each call (its own cost included); "cpu": the same with ``time.thread_time_ns``,
  which leaves out the time other processes had the core;
- take: one feedback call of 1,000 ids (half of them known) against the full join.

Other processes on the machine only add time, so each figure is the best of
``--repeat`` rounds (the joins alternate within a round).

    .venv/bin/python benchmarks/feedback_join.py [--calls 1000000] [--size 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferline.monitoring.feedback_join import FeedbackJoin, Pending


class OrderedDictJoin:
    """The join before generations (commit 60cbd74), for comparison."""

    def __init__(self, size: int, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.size, self.seconds, self.clock = size, seconds, clock
        self._pending: OrderedDict[str, Pending] = OrderedDict()

    def remember(self, request_id: str, pending: Pending) -> None:
        if not request_id:
            return
        self._pending[request_id] = pending
        self._pending.move_to_end(request_id)
        while len(self._pending) > self.size:
            self._pending.popitem(last=False)
        self._expire()

    def take(self, request_id: str) -> Pending | None:
        self._expire()
        return self._pending.pop(request_id, None)

    def _expire(self) -> None:
        oldest = self.clock() - self.seconds
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.at >= oldest:
                break
            self._pending.popitem(last=False)


def outputs(i: int) -> dict[str, Any]:
    return {
        "label": np.array([i & 1], dtype=np.int64),
        "probabilities": np.array([[0.25, 0.75]], dtype=np.float32),
    }


Call = Callable[[str, float, dict[str, Any]], None]
Take = Callable[[list[str]], Sequence[object]]


def old_join(size: int) -> tuple[Call, Take]:
    """As ``Monitor.observe`` and ``Monitor.feedback`` called it."""
    join = OrderedDictJoin(size, 86_400.0)

    def call(request_id: str, at: float, out: dict[str, Any]) -> None:
        join.remember(request_id, Pending("fraud", "1", at, out))

    return call, lambda ids: [join.take(request_id) for request_id in ids]


def new_join(size: int) -> tuple[Call, Take]:
    join = FeedbackJoin(size, 86_400.0)

    def call(request_id: str, at: float, out: dict[str, Any]) -> None:
        join.remember(request_id, "fraud", "1", at, out)

    return call, join.take_many


def measure(make: Callable[[int], tuple[Call, Take]], calls: int, size: int) -> dict[str, float]:
    """Fill a join, then time ``calls`` more; each request id is a new string, as served."""
    at = time.time()
    figures: dict[str, float] = {}

    def full() -> tuple[Call, Take]:
        call, take = make(size)
        for i in range(size):
            call(f"fill-{i:09d}", at, outputs(i))
        gc.collect()
        gc.freeze()  # as the server does after start-up; the join's entries stay young
        return call, take

    # The mean: one loop with remember, one without; both make the id and the outputs.
    call, _ = full()
    start = time.perf_counter_ns()
    for i in range(calls):
        call(f"req-{i:09d}", at, outputs(i))
    with_calls = time.perf_counter_ns() - start
    start = time.perf_counter_ns()
    for i in range(calls):
        f"req-{i:09d}", outputs(i)
    alone = time.perf_counter_ns() - start
    figures["mean_ns"] = (with_calls - alone) / calls
    del call
    gc.unfreeze()
    gc.collect()

    # Each call timed on its own.
    call, take = full()
    clock = time.perf_counter_ns
    took = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        request_id, out = f"req-{i:09d}", outputs(i)
        start = clock()
        call(request_id, at, out)
        took[i] = clock() - start
    figures["timed_mean_ns"] = float(took.mean())
    figures["p99_9_ns"] = float(np.percentile(took, 99.9))
    figures["worst_ns"] = float(took.max())
    figures["over_100us"] = float((took > 100_000).sum())
    figures["over_1ms"] = float((took > 1_000_000).sum())
    del call, take
    gc.unfreeze()
    gc.collect()

    # The same with the thread's CPU time: what the join costs, without the time other
    # processes on the machine took the core away.
    call, take = full()
    cpu = time.thread_time_ns
    for i in range(calls):
        request_id, out = f"req-{i:09d}", outputs(i)
        start = cpu()
        call(request_id, at, out)
        took[i] = cpu() - start
    figures["cpu_worst_ns"] = float(took.max())
    figures["cpu_over_100us"] = float((took > 100_000).sum())

    # One feedback call: 500 ids answered lately, 500 never seen.
    ids = [f"req-{i:09d}" for i in range(calls - 1000, calls, 2)]
    ids += [f"unknown-{i}" for i in range(500)]
    start = clock()
    found = take(ids)
    figures["take_1000_us"] = (clock() - start) / 1000
    if sum(p is not None for p in found) != 500:
        raise SystemExit("take found the wrong answers")
    del call, take
    gc.unfreeze()
    gc.collect()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100_000, help="monitoring.quality.pending")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each figure")
    args = parser.parse_args()
    gc.set_threshold(10_000, 20, 20)  # as inferline.server._tune_gc
    joins = {"ordereddict": old_join, "generations": new_join}
    best: dict[str, dict[str, float]] = {name: {} for name in joins}
    for _ in range(args.repeat):
        for name, make in joins.items():
            for key, value in measure(make, args.calls, args.size).items():
                best[name][key] = min(value, best[name].get(key, value))
    print(
        f"remember() into a full join of {args.size:,}: {args.calls:,} calls, best of "
        f"{args.repeat}; Python {sys.version.split()[0]}"
    )
    print(
        f"{'join':<12} {'mean ns':>8} {'timed ns':>9} {'p99.9 ns':>9} {'worst µs':>9} "
        f"{'>100µs':>7} {'>1ms':>5} {'cpu worst µs':>13} {'cpu >100µs':>11} "
        f"{'take 1000 µs':>13}"
    )
    for name, f in best.items():
        print(
            f"{name:<12} {f['mean_ns']:>8.0f} {f['timed_mean_ns']:>9.0f} {f['p99_9_ns']:>9.0f} "
            f"{f['worst_ns'] / 1000:>9.1f} {f['over_100us']:>7.0f} {f['over_1ms']:>5.0f} "
            f"{f['cpu_worst_ns'] / 1000:>13.1f} {f['cpu_over_100us']:>11.0f} "
            f"{f['take_1000_us']:>13.0f}"
        )


if __name__ == "__main__":
    main()
