"""Every class of the hierarchy comes back, from its HTTP status or its gRPC code,
as a class with the same status and code (the client's mapping is complete)."""

from __future__ import annotations

import pytest

from inferline.client._errors import from_grpc, from_http
from inferline.errors import InferlineError, InvalidInput, ModelNotFound, RateLimited


def _all(cls: type[InferlineError]) -> list[type[InferlineError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _all(child))]


CLASSES = _all(InferlineError)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_each_status_and_code_maps_back(cls: type[InferlineError]) -> None:
    by_status = from_http(cls.http_status, "the message")
    assert (by_status.http_status, by_status.message) == (cls.http_status, "the message")
    by_code = from_grpc(cls.grpc_code, "the message")
    assert (by_code.grpc_code, by_code.message) == (cls.grpc_code, "the message")


def test_the_class_a_client_call_meets() -> None:
    assert type(from_http(404, "m")) is ModelNotFound
    assert type(from_grpc("INVALID_ARGUMENT", "m")) is InvalidInput
    limited = from_http(429, "slow down", retry_after="3")
    assert isinstance(limited, RateLimited) and limited.retry_after == 3
    assert from_http(418, "teapot").http_status == 500
