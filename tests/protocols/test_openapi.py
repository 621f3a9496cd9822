"""OpenAPI: a valid document describing every route of the app, and /docs to read it."""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from inferline.dataplane import DataPlane
from inferline.errors import BadRequest
from inferline.protocols import openapi
from inferline.protocols._openapi_schemas import ALIAS_PARAM, NAME_PARAM, NUMBER_PARAM
from inferline.protocols.rest_app import build_app
from inferline.registry.records import check_alias, check_name, parse_version


@pytest.fixture
def app(dataplane: DataPlane):
    return build_app(dataplane)


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as http:
        yield http


async def test_the_document_is_valid_openapi(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")


async def test_every_route_of_the_app_is_described(app, client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    seen = 0
    for route in app.routes:
        if isinstance(route, Mount):
            assert openapi.openapi_path(route.path) + "/{path}" in paths, route.path
            continue
        assert isinstance(route, Route), route
        for method in route.methods - {"HEAD"}:
            assert method.lower() in paths.get(openapi.openapi_path(route.path), {}), (
                method,
                route.path,
            )
            seen += 1
    assert seen >= 30


async def test_inference_routes_carry_request_and_response_schemas(client):
    document = (await client.get("/openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    cases = {
        "/v2/models/{model}/versions/{version}/infer": ("V2InferRequest", "V2InferResponse"),
        "/invocations": ("MlflowRequest", "MlflowPredictions"),
        "/models/{model}/invocations": ("MlflowRequest", "MlflowPredictions"),
        "/v1/models/{model}:predict": ("TfsPredictRequest", "TfsPredictResponse"),
    }
    for path, (request, answer) in cases.items():
        post = paths[path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        ok = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request}"}
        assert ok == {"$ref": f"#/components/schemas/{answer}"}
        assert request in schemas and answer in schemas
    assert "text/csv" in paths["/invocations"]["post"]["requestBody"]["content"]
    error = paths["/invocations"]["post"]["responses"]["default"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/MlflowError"}
    version_param = paths["/v1/models/{model}/versions/{version}:predict"]["post"]["parameters"]
    assert [p["name"] for p in version_param] == ["model", "version"]


async def test_docs_serve_swagger_ui_from_the_installed_wheel(client):
    page = await client.get("/docs")
    assert page.status_code == 200
    assert 'src="/docs/static/swagger-ui-bundle.js"' in page.text
    assert 'url: "/openapi.json"' in page.text
    script = await client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000


async def test_without_swagger_ui_docs_is_a_plain_list(dataplane, monkeypatch):
    monkeypatch.setattr(openapi, "_swagger_dir", lambda: None)
    app = build_app(dataplane)
    assert not any(isinstance(route, Mount) for route in app.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inferline") as http:
        page = await http.get("/docs")
    assert page.status_code == 200
    assert "<code>/invocations</code>" in page.text
    assert "<code>/v1/models/{model}:predict</code>" in page.text
    assert "inferline[docs]" in page.text


_NAMEISH = st.text(alphabet="aZ09_.-/é ", max_size=130)


@given(name=_NAMEISH)
@example(name="a..b")
@example(name="a.")
@example(name=".a")
@example(name="a" * 128)
@example(name="a" * 129)
def test_the_documented_name_pattern_is_the_servers_check(name: str) -> None:
    schema = NAME_PARAM
    documented = re.search(schema["pattern"], name) is not None and len(name) <= schema["maxLength"]
    try:
        check_name(name)
    except BadRequest:
        accepted = False
    else:
        accepted = True
    assert documented == accepted, name


@given(alias=st.text(alphabet="aZ09_-.", max_size=66), version=st.text("0123456789a", max_size=11))
def test_the_documented_alias_and_version_patterns_are_the_servers_checks(
    alias: str, version: str
) -> None:
    assert (re.search(ALIAS_PARAM["pattern"], alias) is not None) == _accepts(check_alias, alias)
    documented = re.search(NUMBER_PARAM["pattern"], version) is not None and len(version) <= 9
    assert documented == _accepts(parse_version, version), version


def _accepts(check, value: str) -> bool:
    try:
        check(value)
    except BadRequest:
        return False
    return True
