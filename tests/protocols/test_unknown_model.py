"""An unknown model is a 404 whatever the body: the model is checked first, as Triton does.

A client that misspells the model and sends a body the server cannot read must
learn about the model, not about the body. Every REST route family (V2,
TF-Serving, MLflow with the model in the path or the ``inferline-model``
header) and gRPC on both engines.
"""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from inferline.protocols._generated import inference_pb2 as pb
from inferline.protocols._generated import inference_pb2_grpc as pb_grpc
from tests.protocols.grpc_servers import engine, grpc_address

__all__ = ["engine", "grpc_address"]  # fixtures, imported to parametrize the gRPC tests

BODIES = {
    "malformed-json": b"{not json",
    "not-an-object": b"[1, 2]",
    "bad-shape": json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-3], "data": [1]}]}
    ).encode(),
    "bad-datatype": json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}
    ).encode(),
    "huge": json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**12], "data": [1]}]}
    ).encode(),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v2/models/nope/infer", {}),
        ("/v2/models/nope/versions/1/infer", {}),
        ("/v2/models/demo/versions/9/infer", {}),
        ("/v1/models/nope:predict", {}),
        ("/v1/models/nope/versions/1:predict", {}),
        ("/models/nope/invocations", {}),
        ("/invocations", {"inferline-model": "nope"}),
    ],
)
async def test_rest_unknown_model_with_a_bad_body_is_404(
    rest: httpx.AsyncClient, path: str, headers: dict[str, str], body: bytes
) -> None:
    response = await rest.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == 404, response.text
    doc = response.json()
    message = doc.get("error") or doc.get("message")
    assert "'nope'" in message or "no version '9'" in message, message


def _bad_requests() -> dict[str, pb.ModelInferRequest]:
    negative = pb.ModelInferRequest(model_name="nope")
    negative.inputs.add(name="x", datatype="FP32", shape=[-3])
    negative.raw_input_contents.append(b"")
    huge = pb.ModelInferRequest(model_name="nope")
    huge.inputs.add(name="x", datatype="BYTES", shape=[10**12])
    huge.raw_input_contents.append(b"")
    datatype = pb.ModelInferRequest(model_name="nope")
    datatype.inputs.add(name="x", datatype="FP99", shape=[1]).contents.fp32_contents.append(1)
    mismatch = pb.ModelInferRequest(model_name="nope")
    mismatch.inputs.add(name="x", datatype="FP32", shape=[2])
    mismatch.raw_input_contents.extend([b"\0" * 4, b"\0" * 4])
    return {"negative": negative, "huge": huge, "datatype": datatype, "mismatch": mismatch}


@pytest.mark.parametrize("case", ["negative", "huge", "datatype", "mismatch"])
async def test_grpc_unknown_model_with_a_bad_request_is_not_found(
    grpc_address: str, case: str
) -> None:
    request = _bad_requests()[case]
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    assert "model 'nope' not found" in info.value.details()
