"""The one policy table: which role each REST route and each gRPC method needs.

Both REST (:mod:`inferline.protocols.rest_app`) and both gRPC engines
(:mod:`inferline.protocols.v2_grpc`, :mod:`inferline.protocols.grpc_native`)
look requests up here and nowhere else; ``tests/security/test_policy.py``
checks that every route the app serves and every RPC has an entry.

A :class:`Rule` lists the roles that may call (``admin`` always may) and whether
the call is about one model, in which case a grant limited to some models
(``predict:fraud``) covers those models only. Paths nobody lists need any
valid credentials (and then answer 404 or 405).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "AUTHENTICATED",
    "METRICS",
    "MODEL_READ",
    "PREDICT",
    "PUBLIC",
    "READ",
    "REST_POLICY",
    "RPC_POLICY",
    "SERVER_READ",
    "Rule",
    "rest_rule",
    "rpc_rule",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may make a call: any of ``roles`` (empty: anyone, no credentials needed)."""

    name: str
    roles: tuple[str, ...]
    #: The call is about one model (the ``{model}`` path parameter, or the RPC's model name).
    model_bound: bool = False

    @property
    def public(self) -> bool:
        return not self.roles


PUBLIC = Rule("public", ())
#: Inference on a model.
PREDICT = Rule("predict", ("predict",), model_bound=True)
#: One model's metadata and readiness: readers, and predictors of that model.
MODEL_READ = Rule("model-read", ("read", "predict"), model_bound=True)
#: Server metadata (name, version, extensions): anyone with a role.
SERVER_READ = Rule("server-read", ("read", "predict"))
#: Registry listings, monitoring reports, metrics.
READ = Rule("read", ("read",))
#: Prometheus ``/metrics``: ``read``, or public with ``auth.public_metrics``.
METRICS = Rule("metrics", ("read",))
#: Registry changes, traffic, load/unload, keys, the audit log.
ADMIN = Rule("admin", ("admin",))
#: A path nobody lists: any valid credentials (it then answers 404 or 405).
AUTHENTICATED = Rule("authenticated", ("predict", "read"))

_V2 = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
_TFS = ("/v1/models/{model}/versions/{version}", "/v1/models/{model}")
_MLFLOW = ("/models/{model}/versions/{version}", "/models/{model}", "")

#: (method, path template, rule), in match order; HEAD is looked up as GET.
REST_POLICY: tuple[tuple[str, str, Rule], ...] = (
    # Inference first: the hot path, looked up on every request.
    *(("POST", p + "/infer", PREDICT) for p in _V2),
    *(("POST", p + verb, PREDICT) for p in _TFS for verb in (":predict", ":classify", ":regress")),
    *(("POST", p + "/invocations", PREDICT) for p in _MLFLOW),
    # Health and readiness, for load balancers and orchestrators.
    ("GET", "/v2/health/live", PUBLIC),
    ("GET", "/v2/health/ready", PUBLIC),
    ("GET", "/ping", PUBLIC),
    ("GET", "/health", PUBLIC),
    # The API's description.
    ("GET", "/openapi.json", PUBLIC),
    ("GET", "/docs", PUBLIC),
    ("GET", "/docs/static/{path:path}", PUBLIC),
    # Metadata.
    ("GET", "/v2", SERVER_READ),
    ("GET", "/version", SERVER_READ),
    *(("GET", p, MODEL_READ) for p in _V2),
    *(("GET", p + "/ready", MODEL_READ) for p in _V2),
    *(("GET", p, MODEL_READ) for p in _TFS),
    ("GET", "/v1/models", READ),
    ("GET", "/metrics", METRICS),
    # Monitoring.
    ("POST", "/api/v1/feedback", PREDICT),  # the model is in the body: unlimited predict only
    ("GET", "/api/v1/models/{model}/quality", READ),
    ("GET", "/api/v1/models/{model}/drift", READ),
    ("GET", "/api/v1/models/{model}/drift/report.html", READ),
    # The model repository and the registry.
    ("POST", "/v2/repository/index", READ),
    ("POST", "/v2/repository/models/{model}/load", ADMIN),
    ("POST", "/v2/repository/models/{model}/unload", ADMIN),
    ("GET", "/api/v1/models", READ),
    ("GET", "/api/v1/models/{model}", READ),
    ("GET", "/api/v1/models/{model}/versions/{version}", READ),
    ("POST", "/api/v1/models/{model}/versions", ADMIN),
    ("DELETE", "/api/v1/models/{model}/versions/{version}", ADMIN),
    ("PUT", "/api/v1/models/{model}/aliases/{alias}", ADMIN),
    ("POST", "/api/v1/models/{model}/promote", ADMIN),
    ("POST", "/api/v1/models/{model}/rollback", ADMIN),
    ("GET", "/api/v1/models/{model}/audit", ADMIN),
    ("GET", "/api/v1/audit", ADMIN),
)

_INFERENCE = "/inference.GRPCInferenceService/"
_HEALTH = "/grpc.health.v1.Health/"

#: gRPC method path -> rule. Model-bound RPCs carry the model name in field 1.
RPC_POLICY: dict[str, Rule] = {
    _INFERENCE + "ModelInfer": PREDICT,
    _INFERENCE + "ModelMetadata": MODEL_READ,
    _INFERENCE + "ModelReady": MODEL_READ,
    _INFERENCE + "ServerMetadata": SERVER_READ,
    _INFERENCE + "RepositoryIndex": READ,
    _INFERENCE + "ServerLive": PUBLIC,
    _INFERENCE + "ServerReady": PUBLIC,
    _HEALTH + "Check": PUBLIC,
    _HEALTH + "List": PUBLIC,
    _HEALTH + "Watch": PUBLIC,
}


def _compile(template: str) -> re.Pattern[str]:
    """A template as Starlette matches it: ``{name}`` is one non-empty path segment,
    ``{name:path}`` the rest of the path."""
    pattern = ""
    for part in re.split(r"(\{[a-z]+(?::path)?\})", template):
        if part.endswith(":path}"):
            pattern += f"(?P<{part[1:-6]}>.*)"
        elif part.startswith("{"):
            pattern += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            pattern += re.escape(part)
    return re.compile(f"^{pattern}$")


_COMPILED = [
    (method, _compile(template), rule, "{" in template) for method, template, rule in REST_POLICY
]
_EXACT = {(method, template): rule for method, template, rule in REST_POLICY if "{" not in template}


#: Lookups already made (the table is fixed); cleared when full, so junk paths cannot grow it.
_SEEN: dict[tuple[str, str], tuple[Rule, str | None]] = {}
_SEEN_MAX = 4096


def rest_rule(method: str, path: str) -> tuple[Rule, str | None]:
    """The rule of a REST request and the model it is about (None when it names none)."""
    key = (method, path)
    seen = _SEEN.get(key)
    if seen is not None:
        return seen
    found = _lookup("GET" if method == "HEAD" else method, path)
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[key] = found
    return found


def _lookup(method: str, path: str) -> tuple[Rule, str | None]:
    exact = _EXACT.get((method, path))
    if exact is not None:
        return exact, None
    for rule_method, pattern, rule, templated in _COMPILED:
        if templated and rule_method == method:
            found = pattern.match(path)
            if found is not None:
                return rule, found.groupdict().get("model")
    return AUTHENTICATED, None


def rpc_rule(path: str) -> Rule:
    """The rule of a gRPC method (unknown ones need credentials, then answer UNIMPLEMENTED)."""
    return RPC_POLICY.get(path, AUTHENTICATED)
