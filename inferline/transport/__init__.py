"""Bytes in, requests out: the servers' wire layers, below every protocol adapter.

``http1`` (HTTP/1.1 inside uvicorn's server), ``grpc_h2`` (HTTP/2 for the native
gRPC engine), ``grpc_wire`` (the hand-written ``ModelInfer`` reader and writer),
``sockets`` and ``tls`` (server contexts from certificate files, reloadable).
Nothing here knows a model, the data plane or a protocol's semantics:
``protocols/`` hands them a dispatcher or an ASGI app.
"""
