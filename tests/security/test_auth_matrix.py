"""The auth matrix: every kind of credential against every kind of call.

The same cases run over REST (401/403) and over gRPC on both engines
(UNAUTHENTICATED/PERMISSION_DENIED), from the one policy table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from inferline.dataplane import DataPlane
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from inferline.protocols.rest_app import build_app
from inferline.security import Guard
from tests.protocols.grpc_servers import engine, start_server
from tests.protocols.test_v2_grpc import load_payload, to_pb
from tests.security.conftest import AuthWorld

__all__ = ["engine"]

UNAUTH, DENIED, OK = "UNAUTHENTICATED", "PERMISSION_DENIED", "OK"

# (credentials, call, REST status, gRPC code); "-" where the call has no gRPC form.
MATRIX = [
    (None, "infer-kitchen", 401, UNAUTH),
    ("basic", "infer-kitchen", 401, UNAUTH),
    ("key-wrong", "infer-kitchen", 401, UNAUTH),
    ("key-revoked", "infer-kitchen", 401, UNAUTH),
    ("key-expired", "infer-kitchen", 401, UNAUTH),
    ("jwt-expired", "infer-kitchen", 401, UNAUTH),
    ("jwt-not-yet", "infer-kitchen", 401, UNAUTH),
    ("jwt-wrong-aud", "infer-kitchen", 401, UNAUTH),
    ("jwt-wrong-iss", "infer-kitchen", 401, UNAUTH),
    ("jwt-other-key", "infer-kitchen", 401, UNAUTH),
    ("jwt-alg-none", "infer-kitchen", 401, UNAUTH),
    ("jwt-hs-rs-confusion", "infer-kitchen", 401, UNAUTH),
    ("key-kitchen", "infer-ranged", 403, DENIED),
    ("jwt-rs-kitchen", "infer-ranged", 403, DENIED),
    ("key-kitchen", "metadata-ranged", 403, DENIED),
    ("key-kitchen", "index", 403, DENIED),
    ("key-kitchen", "admin", 403, "-"),
    ("key-reader", "infer-kitchen", 403, DENIED),
    ("key-reader", "admin", 403, "-"),
    ("jwt-hs-kitchen", "admin", 403, "-"),
    ("key-kitchen", "infer-kitchen", 200, OK),
    ("jwt-hs-kitchen", "infer-kitchen", 200, OK),
    ("jwt-rs-kitchen", "infer-kitchen", 200, OK),
    ("jwt-es-admin", "infer-ranged-ok", 200, OK),
    ("key-admin", "infer-kitchen", 200, OK),
    ("key-kitchen", "metadata-kitchen", 200, OK),
    ("key-reader", "metadata-ranged", 200, OK),
    ("key-reader", "index", 200, OK),
    ("key-admin", "admin", 200, "-"),
    ("jwt-es-admin", "admin", 200, "-"),
    (None, "health", 200, OK),
    ("key-wrong", "health", 200, OK),
]
IDS = [f"{cred}-{call}" for cred, call, _, _ in MATRIX]

RANGED = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [0, 1, 0]}]}


@pytest.fixture
async def rest(auth_plane: DataPlane, guard: Guard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(auth_plane, guard=guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as client:
        yield client


async def rest_call(
    client: httpx.AsyncClient, call: str, headers: dict[str, str]
) -> httpx.Response:
    if call == "infer-kitchen":
        payload = load_payload("infer_kitchen.json")
        return await client.post("/v2/models/kitchen/infer", json=payload, headers=headers)
    if call in ("infer-ranged", "infer-ranged-ok"):
        return await client.post("/v2/models/ranged/infer", json=RANGED, headers=headers)
    if call.startswith("metadata-"):
        return await client.get(f"/v2/models/{call.split('-')[1]}", headers=headers)
    if call == "index":
        return await client.post("/v2/repository/index", headers=headers)
    if call == "admin":
        return await client.post("/v2/repository/models/kitchen/load", headers=headers)
    return await client.get("/v2/health/ready", headers=headers)


@pytest.mark.parametrize(("cred", "call", "status", "code"), MATRIX, ids=IDS)
async def test_rest_matrix(
    rest: httpx.AsyncClient, auth: AuthWorld, cred: str | None, call: str, status: int, code: str
) -> None:
    headers = {"authorization": auth.creds[cred]} if cred else {}
    response = await rest_call(rest, call, headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if status >= 400:
        body = response.json()
        assert set(body) == {"error"}
        secret = auth.creds[cred].split(" ", 1)[1] if cred else None
        assert not secret or secret not in response.text  # never echo a credential


async def grpc_call(address: str, call: str, metadata: list[tuple[str, str]]) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            if call == "infer-kitchen":
                await stub.ModelInfer(
                    to_pb(load_payload("infer_kitchen.json"), "kitchen"), metadata=metadata
                )
            elif call in ("infer-ranged", "infer-ranged-ok"):
                request = pb.ModelInferRequest(model_name="ranged")
                tensor = request.inputs.add(name="x", datatype="FP64", shape=[1, 3])
                tensor.contents.fp64_contents.extend([0.0, 1.0, 0.0])
                await stub.ModelInfer(request, metadata=metadata)
            elif call.startswith("metadata-"):
                name = call.split("-")[1]
                await stub.ModelMetadata(pb.ModelMetadataRequest(name=name), metadata=metadata)
            elif call == "index":
                await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata)
            else:
                await stub.ServerReady(pb.ServerReadyRequest(), metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return OK


@pytest.mark.parametrize(
    ("cred", "call", "status", "code"), [c for c in MATRIX if c[3] != "-"], ids=lambda v: str(v)
)
async def test_grpc_matrix(
    auth_plane: DataPlane,
    guard: Guard,
    auth: AuthWorld,
    engine: str,
    cred: str | None,
    call: str,
    status: int,
    code: str,
) -> None:
    server, address = await start_server(auth_plane, auth.settings, engine, guard=guard)
    try:
        metadata = [("authorization", auth.creds[cred])] if cred else []
        assert await grpc_call(address, call, metadata) == code
    finally:
        await server.stop(None)


async def test_grpc_refusal_names_no_secret(
    auth_plane: DataPlane, guard: Guard, auth: AuthWorld, engine: str
) -> None:
    server, address = await start_server(auth_plane, auth.settings, engine, guard=guard)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RepositoryIndex(
                    pb.RepositoryIndexRequest(),
                    metadata=[("authorization", auth.creds["key-kitchen"])],
                )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        details = caught.value.details() or ""
        assert "key:kitchen" in details
        assert auth.creds["key-kitchen"].split(" ")[1] not in details
    finally:
        await server.stop(None)


async def test_a_model_named_twice_is_checked_as_protobuf_reads_it(
    auth_plane: DataPlane, guard: Guard, auth: AuthWorld, engine: str
) -> None:
    """Field 1 given twice: protobuf keeps the last one, and so must the check."""
    server, address = await start_server(auth_plane, auth.settings, engine, guard=guard)
    try:
        smuggled = pb.ModelMetadataRequest(name="kitchen").SerializeToString()
        smuggled += pb.ModelMetadataRequest(name="ranged").SerializeToString()
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelMetadata",
                request_serializer=lambda b: b,
                response_deserializer=pb.ModelMetadataResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(smuggled, metadata=[("authorization", auth.creds["key-kitchen"])])
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("cred", "path", "status", "code"),
    [
        (None, "/invocations", 401, "UNAUTHENTICATED"),
        (None, "/models/kitchen/invocations", 401, "UNAUTHENTICATED"),
        ("key-kitchen", "/models/ranged/invocations", 403, "PERMISSION_DENIED"),
        ("key-reader", "/models/kitchen/versions/1/invocations", 403, "PERMISSION_DENIED"),
    ],
)
async def test_mlflow_routes_refuse_in_mlflow_shape(
    rest: httpx.AsyncClient, auth: AuthWorld, cred: str | None, path: str, status: int, code: str
) -> None:
    """A refusal on ``/invocations`` is MLflow's ``{"error_code", "message"}``, as every
    other error there (found by schemathesis: it was ``{"error"}``, against the document)."""
    headers = {"authorization": auth.creds[cred]} if cred else {}
    response = await rest.post(path, json={"inputs": [[0, 1, 0]]}, headers=headers)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code


@pytest.mark.parametrize("public", [False, True])
async def test_metrics_need_read_unless_public(
    auth_plane: DataPlane, auth: AuthWorld, public: bool
) -> None:
    from prometheus_client import CollectorRegistry

    from inferline.monitoring.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    settings = auth.settings.model_copy(
        update={"auth": auth.settings.auth.model_copy(update={"public_metrics": public})}
    )
    guard = Guard(settings, metrics)
    await guard.start()
    try:
        app = build_app(auth_plane, metrics=metrics, guard=guard)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            anonymous = await client.get("/metrics")
            assert anonymous.status_code == (200 if public else 401)
            kitchen = {"authorization": auth.creds["key-kitchen"]}
            assert (await client.get("/metrics", headers=kitchen)).status_code == (
                200 if public else 403
            )
            reader = {"authorization": auth.creds["key-reader"]}
            scrape = await client.get("/metrics", headers=reader)
        assert scrape.status_code == 200
        if not public:
            assert 'inferline_auth_refused_total{protocol="rest",reason="unauthenticated"} 1.0' in (
                scrape.text
            )
            assert 'reason="forbidden"} 1.0' in scrape.text
    finally:
        await guard.stop()


async def test_native_refuses_a_call_without_credentials_before_its_message(
    auth_plane: DataPlane, guard: Guard, auth: AuthWorld
) -> None:
    """Only the request head arrives (no DATA, the stream stays open): the native server
    answers UNAUTHENTICATED at once, reading and buffering nothing."""
    from tests.transport.h2_client import RawClient, request_headers

    server, address = await start_server(auth_plane, auth.settings, "native", guard=guard)
    try:
        client = await RawClient.connect(address)
        client.headers(1, request_headers("/inference.GRPCInferenceService/ModelInfer"))
        _, _, trailers = await client.response(1)
        await client.close()
    finally:
        await server.stop(None)
    assert trailers["grpc-status"] == "16"  # UNAUTHENTICATED
    assert "needs credentials" in trailers["grpc-message"]
