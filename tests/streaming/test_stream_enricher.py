"""The enricher pattern end to end: ``inferline stream MODEL --enrich URL,URL`` against
real ``inferline serve`` processes, through :mod:`inferline.client`."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from inferline.errors import Unauthenticated
from inferline.settings import StreamSettings
from inferline.streaming.enricher import EnricherScorer
from tests.client.conftest import serve
from tests.client.test_client_tls import Pem, pki, tls_server
from tests.conftest import ServerProcess, start_server, stop_server
from tests.security.conftest import AuthWorld, auth, auth_plane, guard
from tests.streaming.conftest import (
    Streams,
    consuming,
    plane_settings,
    start_consumer,
    wait_for,
    wait_sync,
)
from tests.streaming.test_stream_redis import _pending, _results

__all__ = ["auth", "auth_plane", "guard", "pki"]  # fixtures shared with other tests

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _rest_answer(server: ServerProcess, row: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                        "data": row.tolist()}]}  # fmt: skip
    reply = httpx.post(f"http://{server.http_url}/v2/models/demo/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return {o["name"]: o["data"] for o in reply.json()["outputs"]}


@pytest.mark.parametrize("scheme", ["http", "grpc"])
async def test_enricher_results_equal_rest_answers(
    server: ServerProcess, model_dir: Path, streams: Streams, redis_client: Any, scheme: str
) -> None:
    """Entry fields are parsed by the signature the client reads (over gRPC too)."""
    rows = np.random.default_rng(5).normal(size=(100, 20)).astype(np.float32)
    for i, row in enumerate(rows):
        redis_client.xadd(streams.source, {"id": str(i), "input": json.dumps(row.tolist())})
    address = server.http_url if scheme == "http" else server.grpc_url
    config = streams.config(batch_size=16, enrich=[f"{scheme}://{address}"])
    async with consuming(plane_settings(model_dir, config), "demo"):
        await wait_for(lambda: redis_client.xlen(streams.sink) == len(rows))
    assert redis_client.xlen(streams.dead) == 0
    results = _results(redis_client, streams.sink)
    for i, row in enumerate(rows):
        got, rest = results[str(i)], _rest_answer(server, row)
        assert got["model"] == "demo" and got["version"] == "1"
        assert orjson.loads(got["label"]) == rest["label"][0]
        probabilities = np.asarray(orjson.loads(got["probabilities"]), np.float32)
        assert probabilities.tobytes() == np.asarray(rest["probabilities"], np.float32).tobytes()


def test_the_stream_settings_reach_the_client(tmp_path: Path) -> None:
    config = StreamSettings(
        enrich=["http://127.0.0.1:1", "grpc://127.0.0.1:2"],
        enrich_token="s3cret",
        enrich_timeout=7.5,
        enrich_retries=9,
        enrich_balance="round_robin",
    )
    scorer = EnricherScorer(config, "demo")
    assert scorer.client.urls == config.enrich
    assert (scorer.client.timeout, scorer.client.retries) == (7.5, 9)
    assert scorer.client._policy == "round_robin"
    assert scorer.client._token == "s3cret"
    assert "s3cret" not in repr(config)
    with pytest.raises(ValueError, match="go together"):
        StreamSettings(enrich_tls_cert=tmp_path / "c.pem")


async def test_the_token_reaches_the_servers(
    auth_plane: Any, guard: Any, auth: AuthWorld, streams: Streams, redis_client: Any
) -> None:
    """A refused token stops the consumer at start (nothing read); the right one scores."""
    doc = {"fp": [1.5, 2.25, -3.0, 0.1], "i64": [7, -2], "flag": [True], "text": ["hi"]}
    redis_client.xadd(streams.source, {"id": "k", "data": json.dumps(doc)})
    models = auth.settings.model_dir

    def settings(name: str, url: str) -> Any:
        token = auth.creds[name].split(" ", 1)[1]
        config = streams.config(payload_field="data", enrich=[url], enrich_token=token)
        return plane_settings(models, config)

    async with serve(auth_plane, "rest", guard) as url:
        with pytest.raises(Unauthenticated):
            async with consuming(settings("key-wrong", url), "kitchen"):
                pass
        assert redis_client.xlen(streams.dead) == 0
        async with consuming(settings("jwt-hs-kitchen", url), "kitchen"):
            await wait_for(lambda: redis_client.xlen(streams.sink) == 1)
    ((_, result),) = redis_client.xrange(streams.sink)
    assert orjson.loads(result["text_upper"]) == ["HI"]
    assert orjson.loads(result["i64_double"]) == [14, -4]


@pytest.mark.parametrize("kind", ["rest", "grpc"])
async def test_mutual_tls_to_the_servers(
    dataplane: Any, pki: dict[str, Pem], kind: str, model_dir: Path, streams: Streams,
    redis_client: Any,
) -> None:  # fmt: skip
    rows = np.random.default_rng(9).normal(size=(20, 20)).astype(np.float32)
    for i, row in enumerate(rows):
        redis_client.xadd(streams.source, {"id": str(i), "input": json.dumps(row.tolist())})
    (ca, _), (cert, key) = pki["ca"], pki["client"]
    async with tls_server(dataplane, kind, pki) as url:
        config = streams.config(
            enrich=[url], enrich_tls_ca=ca, enrich_tls_cert=cert, enrich_tls_key=key
        )
        async with consuming(plane_settings(model_dir, config), "demo"):
            await wait_for(lambda: redis_client.xlen(streams.sink) == len(rows))
    assert redis_client.xlen(streams.dead) == 0
    labels = {f["id"]: orjson.loads(f["label"]) for _, f in redis_client.xrange(streams.sink)}
    expected = await dataplane_labels(dataplane, rows)
    assert [labels[str(i)] for i in range(len(rows))] == expected


async def dataplane_labels(plane: Any, rows: np.ndarray) -> list[int]:
    """The model in process, one row at a time (as the stream sends them)."""
    from tests.client.test_client import forest

    session = forest(plane.settings.model_dir)
    return [int(session.run(None, {"input": row[None]})[0][0]) for row in rows]  # type: ignore[attr-defined]


def test_enricher_with_one_of_two_servers_killed_mid_run_loses_nothing(
    model_dir: Path, streams: Streams, redis_client: Any, tmp_path: Path
) -> None:
    total = 2000
    rows = np.random.default_rng(8).normal(size=(total, 20)).astype(np.float32).round(4)
    with redis_client.pipeline(transaction=False) as pipe:
        for i, row in enumerate(rows):
            pipe.xadd(streams.source, {"id": str(i), "input": json.dumps(row.tolist())})
        pipe.execute()
    first = start_server(model_dir, tmp_path / "first.log")
    second = start_server(model_dir, tmp_path / "second.log")
    enrich = f"http://{first.http_url},grpc://{second.grpc_url},grpc://{first.grpc_url}"
    consumer = start_consumer(
        model_dir, streams, "demo", "c1", tmp_path / "c1.log",
        "--enrich", enrich, "--enrich-balance", "round_robin", "--enrich-timeout", "30",
        "--batch-size", "32", "--claim-idle-ms", "1000",
    )  # fmt: skip
    try:
        wait_sync(lambda: redis_client.xlen(streams.sink) >= 300)
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=30) == -signal.SIGKILL
        assert redis_client.xlen(streams.sink) < total, "killed after the end: test proves nothing"
        wait_sync(
            lambda: (
                redis_client.xlen(streams.sink) >= total and _pending(redis_client, streams) == 0
            ),
            timeout=300,
        )
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, (tmp_path / "c1.log").read_text()[-3000:]
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        for server in (first, second):
            stop_server(server)
    ids = [fields["id"] for _, fields in redis_client.xrange(streams.sink)]
    assert sorted(ids, key=int) == [str(i) for i in range(total)]
    assert redis_client.xlen(streams.dead) == 0
    assert _pending(redis_client, streams) == 0
