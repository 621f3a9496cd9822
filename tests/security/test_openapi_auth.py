"""schemathesis against ``/openapi.json`` with authentication on (issue 13, part 7).

Every operation of the document is called, in process, three ways:

* with no credentials: only the public operations (health, readiness, the API's
  description: ``PUBLIC`` in :mod:`inferline.security.policy`) may answer anything
  but 401, and nothing answers 2xx;
* with a ``predict`` key limited to ``fraud``: every operation its grant does not
  cover (management, registry, monitoring, metrics, inference or metadata of another
  model) answers 403, and nothing answers 5xx;
* with an ``admin`` key: nothing answers 5xx, and the answers conform to the document.

In every case the answers, refusals included (the document's ``default`` error
body, in the shape of the route's family: MLflow's on ``/invocations``), are
checked against the document.

The examples are few and derandomized, so a run costs the same each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from inferline.cli._control import LocalControl
from inferline.security.keys import KeyStore
from inferline.security.policy import rest_rule
from inferline.server import build_server_app
from inferline.settings import Settings
from tests.lifecycle_models import forest_file
from tests.protocols.test_openapi_conformance import BEYOND_THE_DOCUMENT, NOT_SERVED

schema = schemathesis.pytest.from_fixture("authed_schema")

#: The credentials each test sends, filled by the fixture (keys are made per run).
KEYS: dict[str, str] = {}


def limited_key_may(roles: tuple[str, ...], model: str | None, model_bound: bool) -> bool:
    """What ``predict:fraud`` covers, written out here rather than asked of the guard."""
    return "predict" in roles and (not model_bound or model == "fraud")


BOUNDED = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def authed_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The whole app with one model served and API keys in its registry database."""
    home = tmp_path_factory.mktemp("home")
    config = Settings(home=home, http_port=0, grpc_port=None, request_log="off")
    LocalControl(config).register("fraud", forest_file(home / "src", seed=1), alias="production")
    store = KeyStore(config.registry_database)
    try:
        for name, roles in (("ops", ["admin"]), ("web-frontend", ["predict:fraud"])):
            KEYS[name] = f"Bearer {store.create(name, roles)[1]}"
    finally:
        store.close()
    app = build_server_app(config)
    known = schemathesis.Config.from_dict(
        {
            "dictionaries": {
                "models": {"values": ["fraud", "churn"]},
                "versions": {"values": ["1", "production"]},
                "aliases": {"values": ["production", "staging"]},
            },
            "parameters": {
                "path.model": {"dictionary": "models", "probability": 0.5},
                "path.version": {"dictionary": "versions", "probability": 0.5},
                "path.alias": {"dictionary": "aliases", "probability": 0.5},
            },
        }
    )
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=known)
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()
    KEYS.clear()


def _without_credentials(case: Any) -> dict[str, Any]:
    """The case's own headers, minus any ``Authorization`` the generator made up."""
    headers = dict(case.headers or {})
    for name in [n for n in headers if n.lower() == "authorization"]:
        del headers[name]
    case.headers = headers
    return headers


def _refusals_allowed(case: Any) -> list[Any]:
    """The checks a refusal is exempt from: a 401 or 403 to a request the document
    allows is the point here, and :classify / :regress answer 501 by design. The rest
    (an error body of the documented shape, content types, headers) still run."""
    excluded: list[Any] = [positive_data_acceptance]
    if case.operation.path.endswith(NOT_SERVED):
        excluded.append(not_a_server_error)
    return excluded


@schema.parametrize()
@BOUNDED
def test_without_credentials_only_public_operations_answer(case: Any) -> None:
    _without_credentials(case)
    rule, _ = rest_rule(case.method, case.operation.path)
    # Credentials come before the method: TRACE on a guarded path is 401, not 405
    # (an unauthenticated caller learns nothing of which methods a path has).
    excluded = [*_refusals_allowed(case), unsupported_method]
    response = case.call_and_validate(excluded_checks=excluded)
    where = f"{case.method} {case.formatted_path}"
    if rule.public:
        assert response.status_code not in (401, 403), where
        return
    assert response.status_code == 401, f"{where} answered {response.status_code}"


@schema.parametrize()
@BOUNDED
def test_a_key_limited_to_one_model_reaches_nothing_else(case: Any) -> None:
    headers = {**_without_credentials(case), "Authorization": KEYS["web-frontend"]}
    rule, _ = rest_rule(case.method, case.operation.path)
    model = (case.path_parameters or {}).get("model")
    response = case.call_and_validate(headers=headers, excluded_checks=_refusals_allowed(case))
    where = f"{case.method} {case.formatted_path}"
    if rule.public or limited_key_may(rule.roles, model, rule.model_bound):
        assert response.status_code not in (401, 403), f"{where} answered {response.status_code}"
    else:
        assert response.status_code == 403, f"{where} answered {response.status_code}"


@schema.parametrize()
@BOUNDED
def test_an_admin_key_gets_documented_answers(case: Any) -> None:
    headers = {**_without_credentials(case), "Authorization": KEYS["ops"]}
    excluded = []
    if case.operation.path.endswith(BEYOND_THE_DOCUMENT) and case.method == "POST":
        excluded.append(positive_data_acceptance)
    if case.operation.path.endswith(NOT_SERVED):
        excluded.append(not_a_server_error)
    response = case.call_and_validate(headers=headers, excluded_checks=excluded)
    if response.status_code == 403 and case.operation.path.endswith("/versions"):
        # Code and pickles are refused even to admin without --allow-code-upload (a
        # generated upload named e.g. "data.pkl" is one): the role is not what refuses.
        message = response.json()["error"]
        assert "--allow-code-upload" in message or "trusted_pickle_sha256" in message, message
        return
    assert response.status_code not in (401, 403), f"{case.method} {case.formatted_path}"
