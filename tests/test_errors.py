"""Every error class carries an HTTP status and a gRPC code that agree."""

from __future__ import annotations

from pathlib import Path

import grpc

from inferline import errors

# google/rpc/code.proto's mapping, as STYLE.md states it.
EXPECTED_GRPC = {
    400: {"INVALID_ARGUMENT"},
    401: {"UNAUTHENTICATED"},
    403: {"PERMISSION_DENIED"},
    404: {"NOT_FOUND"},
    405: {"UNIMPLEMENTED"},
    409: {"FAILED_PRECONDITION"},
    413: {"RESOURCE_EXHAUSTED"},
    415: {"INVALID_ARGUMENT"},
    422: {"INVALID_ARGUMENT"},
    429: {"RESOURCE_EXHAUSTED"},
    500: {"INTERNAL"},
    501: {"UNIMPLEMENTED"},
    503: {"UNAVAILABLE"},
    504: {"DEADLINE_EXCEEDED"},
}


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


def test_every_error_has_consistent_codes() -> None:
    classes = [errors.InferlineError, *all_subclasses(errors.InferlineError)]
    assert len(classes) >= 15
    for cls in classes:
        assert cls.http_status in EXPECTED_GRPC, cls
        assert cls.grpc_code in EXPECTED_GRPC[cls.http_status], cls
        assert isinstance(grpc.StatusCode[cls.grpc_code], grpc.StatusCode)


def test_queue_full_asks_to_retry() -> None:
    error = errors.QueueFull("full")
    assert error.http_status == 503
    assert dict(error.headers)["retry-after"] == "1"


def test_errors_module_imports_no_framework() -> None:
    source = Path(errors.__file__).read_text()
    for framework in ("starlette", "fastapi", "grpc", "uvicorn"):
        assert f"import {framework}" not in source
