"""The client against real ``inferline serve`` processes: failover and the blocking Client."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from inferline.client import AsyncClient, Client
from inferline.errors import ModelNotFound
from tests.client.test_client import assert_demo, demo_rows, forest
from tests.conftest import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.e2e

CALLS = 300


async def test_one_of_two_servers_killed_mid_run_loses_no_call(
    model_dir: Path, tmp_path: Path
) -> None:
    first = start_server(model_dir, tmp_path / "first.log")
    second = start_server(model_dir, tmp_path / "second.log")
    session = forest(model_dir)
    done = 0
    try:
        clients = [
            AsyncClient([f"http://{first.http_url}", f"http://{second.http_url}"], timeout=30),
            AsyncClient([f"grpc://{first.grpc_url}", f"grpc://{second.grpc_url}"], timeout=30),
        ]
        limit = asyncio.Semaphore(8)
        killed = asyncio.Event()

        async def one(client: AsyncClient, i: int) -> None:
            nonlocal done
            rows = demo_rows(4, seed=i)
            async with limit:
                result = await client.infer("demo", {"input": rows})
            assert_demo(result, rows, session)
            done += 1
            if done == CALLS // 2 and not killed.is_set():
                first.process.send_signal(signal.SIGKILL)
                killed.set()

        async with clients[0], clients[1]:
            await asyncio.gather(*(one(c, i) for c in clients for i in range(CALLS)))
            assert killed.is_set() and first.process.wait(timeout=10) == -signal.SIGKILL
            for client in clients:
                dead, alive = client.endpoints
                assert dead.down_until > 0 and alive.answered > CALLS // 2
    finally:
        for server in (first, second):
            stop_server(server)
    assert done == 2 * CALLS


def test_the_blocking_client_in_plain_code(server: ServerProcess, model_dir: Path) -> None:
    urls = [f"http://{server.http_url}", f"grpc://{server.grpc_url}"]
    rows = demo_rows(5)
    with Client(urls, balance="round_robin") as client:
        results = [client.infer("demo", {"input": rows}) for _ in range(4)]
        assert client.ready("demo")
        assert client.metadata("demo")["name"] == "demo"
        with pytest.raises(ModelNotFound):
            client.infer("nope", {"input": rows})
    assert sorted(r.endpoint for r in results) == sorted(urls * 2)
    for result in results:
        assert_demo(result, rows, forest(model_dir))
        assert result.outputs["label"].dtype == np.int64


async def test_the_blocking_client_in_threads_and_inside_a_running_loop(
    server: ServerProcess, model_dir: Path
) -> None:
    """As in a notebook: this test's own loop runs while the Client blocks on its thread."""
    rows = demo_rows(3)
    client = Client(f"grpc://{server.grpc_url}")
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: client.infer("demo", {"input": rows}), range(12)))
        client.close()
        results.append(client.infer("demo", {"input": rows}))  # usable again after close
    finally:
        client.close()
    for result in results:
        assert_demo(result, rows, forest(model_dir))
