"""The ceiling: raw Starlette on uvicorn + uvloop + inferline's HTTP/1.1 protocol,
reading the body and answering a constant V2-shaped body (inferline's venv,
inferline's stack); and a
grpc.aio ModelInfer in the same loop that parses the request and answers a
constant ModelInferResponse, as inferline's gRPC server does.

    python hello_app.py PORT [GRPC_PORT]
"""

import contextlib
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.transport.http1 import HttpProtocol

ANSWER = (
    b'{"model_name":"forest","model_version":"1","outputs":['
    b'{"name":"label","datatype":"INT64","shape":[1],"data":[1]}]}'
)


async def infer(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    if len(sys.argv) < 3:
        yield
        return
    import grpc

    from inferline.protocols._generated import inference_pb2 as pb

    answer = pb.ModelInferResponse(model_name="forest", model_version="1")
    answer.outputs.add(name="label", datatype="INT64", shape=[1]).contents.int64_contents.append(1)

    async def model_infer(request, context):
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    size = 64 * 1024 * 1024  # inferline's own server options
    options = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 1),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": handler}
            )
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{sys.argv[2]}")
    await server.start()
    try:
        yield
    finally:
        await server.stop(grace=1)


app = Starlette(
    routes=[
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http=HttpProtocol,  # the protocol inferline's REST server runs
        access_log=False,
        log_level="warning",
    )
