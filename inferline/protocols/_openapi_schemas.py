"""The OpenAPI document's schemas: bodies, and the parameters the server checks.

Each pattern here is the one the server's own check enforces (model names and
aliases in :mod:`inferline.registry.records`, versions in ``parse_version``), so
the document allows exactly what the server accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inferline.types import DATATYPES


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Iterable[str] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


#: A response's or request's content: media type -> {"schema": ...}.
Content = dict[str, dict[str, Any]]

_ANY: dict[str, Any] = {}
STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_PARAMS = {"type": "object", "additionalProperties": True}
_SHAPE = {"type": "array", "items": _INT}
_NAMED = {"type": "string", "minLength": 1}
_TENSOR_META = _obj(
    ["name", "datatype", "shape"],
    name=STR,
    datatype={"type": "string", "enum": list(DATATYPES)},
    shape=_SHAPE,
)
_TENSOR = _obj(
    ["name", "datatype", "shape"],
    name=_NAMED,
    datatype={"type": "string", "enum": list(DATATYPES)},
    shape=_SHAPE,
    parameters=_PARAMS,
    data={"description": "Row-major values, flat or nested; absent with binary data."},
)

# What the server's own checks accept (inferline.registry.records), as JSON Schema.
# A model name never holds "..": every "." is followed by another character or ends it.
_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
_ALIAS = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
NAME_PARAM = {"type": "string", "pattern": _NAME, "maxLength": 128}
ALIAS_PARAM = {"type": "string", "pattern": _ALIAS}
NUMBER_PARAM = {"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": 9}
REF_PARAM = {"anyOf": [NUMBER_PARAM, ALIAS_PARAM]}
VERSION_QUERY = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "One version, by number or alias (empty or absent: every version observed).",
    "schema": {"type": "string"},
}
REGISTER_QUERY = (
    {"name": "filename", "in": "query", "required": True,
     "description": "The artifact's file name (its extension picks the runtime).",
     "schema": {"type": "string", "pattern": r"^(?:[^/]*[^/.][^/]*|\.{3,}[^/]*)$"}},
    {"name": "runtime", "in": "query", "schema": STR},
    {"name": "description", "in": "query", "schema": STR},
    {"name": "alias", "in": "query", "schema": {"type": "string", "pattern": _ALIAS}},
    {"name": "tag", "in": "query", "description": "key=value; repeat for more.",
     "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}}},
    {"name": "metrics", "in": "query", "content": {"application/json": {"schema": _PARAMS}}},
    {"name": "settings", "in": "query", "content": {"application/json": {"schema": _PARAMS}}},
)  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=STR),
    "V2Live": _obj(["live"], live=_BOOL),
    "V2Ready": _obj(["ready"], ready=_BOOL),
    "V2ModelReady": _obj(["name", "ready"], name=STR, ready=_BOOL),
    "V2ServerMetadata": _obj(
        ["name", "version"], name=STR, version=STR, extensions={"type": "array", "items": STR}
    ),
    "V2ModelMetadata": _obj(
        ["name", "inputs", "outputs"],
        name=STR,
        versions={"type": "array", "items": STR},
        platform=STR,
        inputs={"type": "array", "items": _TENSOR_META},
        outputs={"type": "array", "items": _TENSOR_META},
    ),
    "V2InferRequest": _obj(
        ["inputs"],
        id=STR,
        parameters=_PARAMS,
        inputs={"type": "array", "items": _TENSOR, "minItems": 1},
        outputs={"type": "array", "items": _obj(["name"], name=_NAMED, parameters=_PARAMS)},
    ),
    "V2InferResponse": _obj(
        ["model_name", "outputs"],
        model_name=STR,
        model_version=STR,
        id=STR,
        parameters=_PARAMS,
        outputs={"type": "array", "items": _TENSOR},
    ),
    "MlflowRequest": {
        **_obj(
            dataframe_split=_obj(
                ["data"],
                columns={"type": "array", "items": STR},
                data={"type": "array", "items": {"type": "array", "items": _ANY}},
                index={"type": "array", "items": _ANY},
            ),
            dataframe_records={"type": "array", "items": _PARAMS},
            instances={"type": "array", "items": _ANY},
            inputs={"description": "One tensor (a list) or an object of named inputs."},
            params=_PARAMS,
        ),
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs.",
    },
    "MlflowPredictions": _obj(["predictions"], predictions=_ANY),
    "MlflowError": _obj(["error_code", "message"], error_code=STR, message=STR),
    "TfsPredictRequest": {
        **_obj(
            signature_name={"type": "string", "default": "serving_default"},
            instances={"type": "array", "items": _ANY, "description": "Row format."},
            inputs={"description": "Columnar format: one tensor or an object of them."},
        ),
        "description": "Exactly one of instances (rows) or inputs (columns).",
    },
    "TfsPredictResponse": _obj(
        predictions={"type": "array", "items": _ANY, "description": "Answer to instances."},
        outputs={"description": "Answer to inputs."},
    ),
    "TfsModelStatus": _obj(
        ["model_version_status"],
        model_version_status={
            "type": "array",
            "items": _obj(
                ["version", "state", "status"],
                version=STR,
                state=STR,
                status=_obj(error_code=STR, error_message=STR),
            ),
        },
        name=STR,
        ready=_BOOL,
    ),
    "TfsModelList": _obj(["models"], models={"type": "array", "items": STR}),
}

# Schemas of the management and monitoring routes.
_VERSION_RECORD = _obj(
    ["name", "version", "runtime", "sha256", "created_at", "aliases"],
    name=STR,
    version=_INT,
    runtime=STR,
    sha256=STR,
    artifact=STR,
    size=_INT,
    created_at=STR,
    description=STR,
    tags=_PARAMS,
    metrics=_PARAMS,
    signature=_ANY,
    settings=_ANY,
    aliases={"type": "array", "items": STR},
    has_profile=_BOOL,
)
_SUMMARY = dict(
    name=STR,
    latest={"type": "integer", "nullable": True},
    versions_count=_INT,
    aliases={"type": "object", "additionalProperties": _INT},
)
_AUDIT = _obj(
    ["at", "actor", "action", "model", "ok"],
    at=STR,
    actor=STR,
    action=STR,
    model=STR,
    version={"type": "integer", "nullable": True},
    detail=STR,
    ok=_BOOL,
)
_SCALAR: dict[str, Any] = {"anyOf": [STR, {"type": "number"}, _BOOL]}
_TRUTH = {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1}]}
_ONE_TRUTH = _obj(
    ["request_id", "truth"], request_id={"type": "string", "minLength": 1}, truth=_TRUTH
)

SCHEMAS.update(
    {
        "RepositoryIndex": {
            "type": "array",
            "items": _obj(
                ["name", "version", "state", "reason"],
                name=STR,
                version=STR,
                state={"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                reason=STR,
            ),
        },
        "RepositoryState": _obj(["name", "state"], name=STR, state=STR),
        "ModelSummaries": {"type": "array", "items": _obj(list(_SUMMARY), **_SUMMARY)},
        "ModelDetail": _obj(
            [*_SUMMARY, "versions"],
            **_SUMMARY,
            versions={"type": "array", "items": _VERSION_RECORD},
        ),
        "ModelVersion": _VERSION_RECORD,
        "AliasChange": {
            **_obj(
                ["version"],
                version={
                    "anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                        {"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": 9},
                    ]
                },
                allow_signature_change={"type": "boolean", "default": False},
            ),
        },
        "AliasMoved": _obj(
            ["name", "alias", "version"],
            name=STR,
            alias=STR,
            version=_INT,
            previous={"type": "integer", "nullable": True},
        ),
        "Rollback": _obj(alias={"type": "string", "pattern": _ALIAS, "default": "production"}),
        "RolledBack": _obj(["name", "alias", "version"], name=STR, alias=STR, version=_INT),
        "Deleted": _obj(["name", "version", "deleted"], name=STR, version=_INT, deleted=_BOOL),
        "Audit": {"type": "array", "items": _AUDIT},
        "Feedback": {
            "anyOf": [
                {**_ONE_TRUTH, "not": {"required": ["feedback"]}},
                _obj(["feedback"], feedback={"type": "array", "items": _ONE_TRUTH, "minItems": 1}),
            ],
        },
        "FeedbackResult": _obj(
            ["accepted", "unknown", "rejected"],
            accepted=_INT,
            unknown={"type": "array", "items": STR},
            rejected={
                "type": "array",
                "items": _obj(["request_id", "error"], request_id=STR, error=STR),
            },
        ),
        "VersionReports": _obj(
            ["model", "versions"],
            model=STR,
            versions={"type": "array", "items": {"type": "object"}},
        ),
        "OpenAPI": _obj(["openapi", "info", "paths"], openapi=STR, info=_PARAMS, paths=_PARAMS),
    }
)
SCHEMAS["AliasChange"]["properties"]["alias"] = {"type": "string", "pattern": _ALIAS}
