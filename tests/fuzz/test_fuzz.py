"""Each network parser survives a bounded atheris run (tests/fuzz/targets.py).

By default each target runs a fixed 60,000 inputs from a fixed seed, so the result
is repeatable; ``INFERLINE_FUZZ_SECONDS=600`` explores for that long from a random
seed. The corpus starts from real messages (the shared V2 payloads, their gRPC
encodings, header blocks a gRPC client sends) and the inputs in
tests/fuzz/corpus/<target>/ that once broke a parser.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hpack
import pytest

from tests.protocols.test_v2_grpc import load_payload, to_pb

HERE = Path(__file__).parent
#: Inputs per target in the repeatable default run (about 2 to 5 s each here).
RUNS = 60_000
ROOT = HERE.parents[1]
PAYLOADS = sorted((ROOT / "tests" / "data").glob("infer_*.json"))


def _seeds(target: str) -> list[bytes]:
    if target == "v2_json":
        return [b"\x00" + path.read_bytes() for path in PAYLOADS]
    if target == "grpc_infer":
        return [
            to_pb(load_payload(path.name), "model", raw=raw).SerializeToString()
            for path in PAYLOADS
            for raw in (False, True)
        ]
    encoder = hpack.Encoder()
    head = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8081"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "5S"),
    ]
    return [encoder.encode(head) + b"\xff\xfe\xfd" + encoder.encode(head)]


@pytest.mark.parametrize("target", ["v2_json", "grpc_infer", "hpack_block"])
def test_parser_survives_fuzzing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    for number, seed in enumerate(_seeds(target)):
        (tmp_path / f"seed-{number}").write_bytes(seed)
    # Inputs that once broke a parser (#14: a BYTES shape of 2e8 with no data took 3.4 GB).
    for found in sorted((HERE / "corpus" / target).glob("*")):
        (tmp_path / f"seed-{found.name}").write_bytes(found.read_bytes())
    seconds = int(os.environ.get("INFERLINE_FUZZ_SECONDS", "0"))
    # By default a fixed seed and run count (and hash seed), so a CI run is repeatable and
    # a red build means a change broke a parser, not that this run got lucky; set
    # INFERLINE_FUZZ_SECONDS to explore for that long from a random seed instead.
    budget = [f"-max_total_time={seconds}"] if seconds else ["-seed=1", f"-runs={RUNS}"]
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "targets.py"),
            target,
            *budget,
            "-rss_limit_mb=1536",
            "-malloc_limit_mb=512",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=(seconds or 60) + 120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"},
    )
    crashes = sorted(p.name for p in tmp_path.glob("*-*") if not p.name.startswith("seed-"))
    assert run.returncode == 0 and not crashes, (
        f"{target}: exit {run.returncode}, artifacts {crashes}\n{run.stderr[-4000:]}"
    )
    assert "stat::number_of_executed_units" in run.stderr, run.stderr[-2000:]
