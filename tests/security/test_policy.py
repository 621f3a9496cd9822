"""The one policy table covers every route and RPC, and grants mean what they say."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Mount, Route

from inferline.dataplane import DataPlane
from inferline.protocols import management, mlflow, monitoring_api, openapi, tfserving, v2_rest
from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._grpc_auth import model_name
from inferline.protocols.v2_grpc import MODEL_INFER_PATH, GrpcService
from inferline.security.policy import (
    ADMIN,
    AUTHENTICATED,
    METRICS,
    MODEL_READ,
    PREDICT,
    PUBLIC,
    REST_POLICY,
    RPC_POLICY,
    rest_rule,
    rpc_rule,
)
from inferline.security.principals import Principal, parse_grants


def served_routes(dataplane: DataPlane) -> list[tuple[str, str]]:
    routes: list[Any] = [
        *v2_rest.routes(dataplane),
        *mlflow.routes(dataplane),
        *tfserving.routes(dataplane),
        *openapi.routes(),
        *management.routes(dataplane, None),
        *monitoring_api.routes(dataplane, None),  # type: ignore[arg-type]
    ]
    pairs = [("GET", "/metrics")]
    for route in routes:
        if isinstance(route, Mount):
            pairs.append(("GET", route.path + "/{path:path}"))
            continue
        assert isinstance(route, Route)
        pairs += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return pairs


def test_every_rest_route_has_its_own_entry(dataplane: DataPlane) -> None:
    table = {(method, template): rule for method, template, rule in REST_POLICY}
    served = served_routes(dataplane)
    missing = [pair for pair in served if pair not in table]
    assert not missing, f"routes without a policy entry: {missing}"
    optional = {("GET", "/docs/static/{path:path}")}  # only with the docs extra
    assert set(table) - set(served) <= optional, "policy entries for routes nobody serves"
    for (method, template), rule in table.items():
        path = re.sub(r"\{[a-z]+(:path)?\}", "m1", template)
        found, model = rest_rule(method, path)
        assert found is rule, (method, template)
        if rule.model_bound and "{model}" in template:
            assert model == "m1"


def test_every_rpc_has_an_entry(dataplane: DataPlane) -> None:
    served = {*GrpcService(dataplane).rpcs, MODEL_INFER_PATH}
    assert served == set(RPC_POLICY)


@pytest.mark.parametrize(
    ("method", "path", "rule", "model"),
    [
        ("POST", "/v2/models/fraud/infer", PREDICT, "fraud"),
        ("POST", "/v2/models/fraud/versions/3/infer", PREDICT, "fraud"),
        ("POST", "/v1/models/fraud:predict", PREDICT, "fraud"),
        ("POST", "/invocations", PREDICT, None),
        ("HEAD", "/v2/models/fraud", MODEL_READ, "fraud"),
        ("GET", "/v2/health/ready", PUBLIC, None),
        ("GET", "/metrics", METRICS, None),
        ("PUT", "/api/v1/models/fraud/aliases/production", ADMIN, "fraud"),
        ("GET", "/no/such/route", AUTHENTICATED, None),
        ("DELETE", "/v2/health/ready", AUTHENTICATED, None),
    ],
)
def test_rest_lookup(method: str, path: str, rule: Any, model: str | None) -> None:
    assert rest_rule(method, path) == (rule, model)


def test_unknown_rpc_needs_credentials() -> None:
    assert rpc_rule("/inference.GRPCInferenceService/RepositoryModelLoad") is AUTHENTICATED


def test_grants() -> None:
    kitchen = Principal("key:k", "key", parse_grants(["predict:kitchen", "predict:demo"]))
    assert kitchen.allows(("predict",), "kitchen", True)
    assert kitchen.allows(("predict",), "demo", True)
    assert not kitchen.allows(("predict",), "ranged", True)
    assert not kitchen.allows(("predict",), None, True)  # /invocations: which model?
    assert not kitchen.allows(("read",), None, False)
    assert kitchen.allows(("read", "predict"), None, False)  # server metadata
    everything = Principal("jwt:a", "jwt", parse_grants(["predict", "predict:kitchen"]))
    assert everything.allows(("predict",), None, True)
    admin = Principal("jwt:a", "jwt", parse_grants(["admin", "openid", "profile"]))
    assert admin.allows(("read",), "x", True) and admin.allows(("admin",), None, False)
    assert Principal("jwt:b", "jwt", parse_grants(["openid"])).grants == {}


def test_model_name_reads_field_one_as_protobuf_does() -> None:
    request = pb.ModelInferRequest(model_name="fraud", model_version="2", id="x")
    request.inputs.add(name="a", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\0" * 4)
    data = request.SerializeToString()
    assert model_name(data) == "fraud"
    twice = data + pb.ModelInferRequest(model_name="churn").SerializeToString()
    assert model_name(twice) == pb.ModelInferRequest.FromString(twice).model_name == "churn"
    assert model_name(b"") is None
    assert model_name(data[:-2]) is None  # truncated: not a message
    assert model_name(b"\x0a\x02\xff\xfe") is None  # not UTF-8
