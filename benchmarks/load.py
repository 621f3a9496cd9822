"""Load generators (wrk for HTTP/1.1, h2load for gRPC) and server CPU accounting.

The generator is pinned to core 1 (the server to core 0) unless ``pin`` is False.
Server CPU is read from ``/proc/<pid>/stat`` (user + system) for the server
process and every descendant, before and after the run.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Result", "grpc_body", "process_cpu", "run_h2load", "run_wrk"]

_TICK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Result:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: Server CPU (all its processes) per request, in microseconds.
    cpu_us: float = float("nan")
    #: Load generator CPU per request, in microseconds.
    client_cpu_us: float = float("nan")
    #: Cores busy with anything but the server and the load generator during the run (noise).
    other_cores: float = float("nan")
    #: Cores the server used on average during the run.
    server_cores: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its live descendants."""
    total = 0
    for member in _descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all but idle and iowait) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


@dataclass
class _Usage:
    out: str
    server: float
    client: float
    other_cores: float
    server_cores: float


def _timed(command: list[str], server_pid: int) -> _Usage:
    began, busy = time.monotonic(), _busy_seconds()
    server_before, client_before = process_cpu(server_pid), _children_cpu()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    server = process_cpu(server_pid) - server_before
    client = _children_cpu() - client_before
    wall = time.monotonic() - began
    other = (_busy_seconds() - busy - server - client) / wall
    return _Usage(out, server, client, max(other, 0.0), server / wall)


def _pin(pin: bool) -> list[str]:
    return ["taskset", "-c", "1"] if pin else []


def run_wrk(
    url: str,
    body: bytes,
    connections: int,
    duration: int,
    server_pid: int,
    *,
    pin: bool = True,
    threads: int = 1,
) -> Result:
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
        command = [
            *_pin(pin),
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        usage = _timed(command, server_pid)
    out = usage.out
    latency = {
        m[0]: float(m[1]) * _UNITS[m[2]]
        for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if done is None or "50" not in latency:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    requests, seconds = int(done.group(1)), float(done.group(2)) * _UNITS[done.group(3)] / 1e3
    errors = sum(
        int(n)
        for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out)
        + re.findall(r"(?:connect|read|write|timeout) (\d+)", out)
    )
    return Result(
        requests,
        seconds,
        requests / seconds,
        latency["50"],
        latency["99"],
        errors,
        usage.server / max(requests, 1) * 1e6,
        usage.client / max(requests, 1) * 1e6,
        usage.other_cores,
        usage.server_cores,
    )


def grpc_body(model: str, rows: np.ndarray[Any, Any]) -> bytes:
    """A length-prefixed gRPC message: one ModelInferRequest, data in ``raw_input_contents``
    (as ``tritonclient.grpc`` sends it)."""
    from inferline.protocols._generated import inference_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input",
        datatype="FP64" if rows.dtype == np.float64 else "FP32",
        shape=list(rows.shape),
    )
    message = pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor],
        raw_input_contents=[rows.astype("<" + rows.dtype.str[1:]).tobytes()],
    ).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def run_h2load(
    address: str,
    body: bytes,
    connections: int,
    duration: int,
    server_pid: int,
) -> Result:
    """h2load against ``GRPCInferenceService/ModelInfer``: one stream per connection."""
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load is needed: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory() as work:
        data, log = Path(work) / "body.bin", Path(work) / "requests.log"
        data.write_bytes(body)
        command = [
            *_pin(True),
            "h2load",
            f"-c{connections}",
            "-m1",
            "-t1",
            f"-D{duration}",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(data),
            "--log-file",
            str(log),
            f"http://{address}/inference.GRPCInferenceService/ModelInfer",
        ]
        usage = _timed(command, server_pid)
        out = usage.out
        lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    seconds = re.search(r"finished in ([\d.]+)(us|ms|s)", out)
    if counts is None or seconds is None or not lines:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    # log lines: start time (us since epoch), HTTP status, latency (us)
    latencies = np.array([int(fields[2]) for fields in lines]) / 1e3
    done, succeeded = int(counts.group(1)), int(counts.group(2))
    elapsed = float(seconds.group(1)) * _UNITS[seconds.group(2)] / 1e3
    return Result(
        done,
        elapsed,
        done / elapsed,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        done - succeeded,
        usage.server / max(done, 1) * 1e6,
        usage.client / max(done, 1) * 1e6,
        usage.other_cores,
        usage.server_cores,
    )
