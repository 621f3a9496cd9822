"""gRPC over inferline's own HTTP/2 server, in the event loop (the ``native`` engine).

Why: grpc.aio (grpcio) costs about 170 us of CPU per call before any work,
in C-core completion queues, thread hand-offs and its poller thread; this
server parses HTTP/2 on asyncio's Protocol API in the loop that already runs
REST. It serves unary and server-streaming RPCs over cleartext HTTP/2 (h2c)
or TLS (ALPN ``h2``); modules: ``frames`` (wire constants, limits),
``hpack`` (header compression), ``streams`` (per-stream state), ``connection``
(reading HTTP/2), ``output`` (writing it: answers, flow control,
backpressure), ``guard`` (budgets and deadlines against hostile clients),
``server`` (listening, the connection cap, shutdown); the gRPC semantics are
``protocols/grpc_native.py``'s.
"""

from inferline.transport.grpc_h2.connection import Limits
from inferline.transport.grpc_h2.server import GrpcServer

__all__ = ["GrpcServer", "Limits"]
