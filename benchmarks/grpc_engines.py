"""The two gRPC engines' own cost: ModelInfer answered with constant bytes, no model.

Why: the full benchmark (bench.py, peers inferline-grpcio / inferline-native)
measures transport plus data plane plus model; this isolates what each
transport costs per call. The server runs in its own process pinned to core 0,
h2load on core 1 (benchmarks/load.py), and the table gives req/s and server
CPU per request for each engine, in the same run:

    .venv/bin/python benchmarks/grpc_engines.py --duration 8

``--serve ENGINE PORT`` is the server side (used by the script itself).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from load import grpc_body, run_h2load  # noqa: E402

ANSWER = b"\x0a\x04demo\x12\x011"  # model_name "demo", model_version "1"


async def serve(engine: str, port: int) -> None:
    import uvloop  # noqa: F401 - the loop inferline serves on

    from inferline.dataplane import DataPlane
    from inferline.protocols import v2_grpc
    from inferline.settings import Settings

    settings = Settings(grpc_port=port)

    async def constant(data: bytes, request_id: str) -> tuple[bytes, str]:
        return ANSWER, "1"

    if engine == "native":
        from inferline.protocols.grpc_native import native_server
        from inferline.transport.sockets import listen_socket

        server = native_server(DataPlane(settings))
        server._dispatcher._infer = constant  # the transport alone: no data plane
        await server.start(listen_socket("127.0.0.1", port))
    else:
        import grpc

        async def model_infer(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            context.set_trailing_metadata((("x-request-id", "r"), ("inferline-model-version", "1")))
            return ANSWER

        aio = grpc.aio.server(options=v2_grpc.server_options(settings))
        handlers = {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
        aio.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(v2_grpc.SERVICE_NAME, handlers),)
        )
        aio.add_insecure_port(f"127.0.0.1:{port}")
        await aio.start()
        v2_grpc.batch_grpc_threads()
    await asyncio.Event().wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve", nargs=2, metavar=("ENGINE", "PORT"))
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve[0], int(args.serve[1])))
        return
    body = grpc_body("demo", np.zeros((1, 20), dtype=np.float32))
    print(f"{'engine':<8} {'req/s':>8} {'p50 ms':>7} {'server CPU us/req':>18} {'errors':>6}")
    for engine in ("grpcio", "native"):
        port = free_port()
        command = ["taskset", "-c", "0", sys.executable, __file__, "--serve", engine, str(port)]
        process = subprocess.Popen(command)
        try:
            wait_port(port)
            address = f"127.0.0.1:{port}"
            run_h2load(address, body, args.connections, 2, process.pid)  # warm-up
            r = run_h2load(address, body, args.connections, args.duration, process.pid)
            print(f"{engine:<8} {r.rps:>8,.0f} {r.p50_ms:>7.2f} {r.cpu_us:>18.1f} {r.errors:>6}")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
