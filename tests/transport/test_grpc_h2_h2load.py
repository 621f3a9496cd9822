"""nghttp2's h2load against the native gRPC server: a third, independent HTTP/2 client.

h2load only reads the HTTP status, so an observer on the data plane counts
the answers the model actually gave (status 200, protocol grpc).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from inferline.dataplane import DataPlane
from inferline.monitoring.records import InferenceRecord
from inferline.monitoring.telemetry import Observers
from inferline.protocols._generated import inference_pb2 as pb
from inferline.settings import Settings
from tests.protocols.grpc_servers import start_server

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="h2load is missing: apt-get install nghttp2-client (scripts/bootstrap.sh does)",
)


class Count:
    def __init__(self) -> None:
        self.statuses: list[tuple[int, str]] = []

    def observe(self, record: InferenceRecord) -> None:
        self.statuses.append((record.status, record.protocol))


async def test_h2load_many_streams_per_connection(settings: Settings, tmp_path: Path) -> None:
    request = pb.ModelInferRequest(model_name="demo")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 20])
    request.raw_input_contents.append(np.ones((1, 20), dtype="<f4").tobytes())
    message = request.SerializeToString()
    body = tmp_path / "body.bin"
    body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    count = Count()
    dataplane = DataPlane(settings, observers=Observers((count,)))
    await dataplane.start()
    server, address = await start_server(dataplane, dataplane.settings, "native")
    try:
        process = await asyncio.create_subprocess_exec(
            "h2load",
            "-n400",
            "-c4",
            "-m8",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(body),
            f"http://{address}/inference.GRPCInferenceService/ModelInfer",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out = (await process.communicate())[0].decode()
    finally:
        await server.stop(None)
        await dataplane.stop()
    assert process.returncode == 0, out
    done = re.search(r"requests: 400 total, 400 started, (\d+) done, (\d+) succeeded", out)
    assert done is not None and done.groups() == ("400", "400"), out
    assert count.statuses == [(200, "grpc")] * 400
