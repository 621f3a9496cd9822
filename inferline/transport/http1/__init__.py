"""HTTP/1.1 for the REST server: an asyncio protocol on httptools, lean per request.

It plugs into uvicorn's server (``uvicorn.Config(http=HttpProtocol)``), so
lifespan, sockets, signals, graceful shutdown and the limits stay uvicorn's,
and answers on the wire as uvicorn's own ``HttpToolsProtocol`` does (the tests
compare the bytes), with less work per request:

- one write per answer: a fixed-length answer's head leaves with its body
  (uvicorn writes them separately: two ``send`` calls per request);
- no keep-alive timer armed and cancelled per request: one per connection,
  re-armed only when it fires;
- no Event per request: the app's ``receive`` waits on a future only when the
  body is not already in hand;
- one search over all header names and one over all values, not two per header;
- the request body as the bytes httptools gave, not copied through a bytearray.

``benchmarks/http1_protocol.py --instructions`` counts, with callgrind, the
instructions per request of both protocols on the same requests in process: 119
thousand against uvicorn's 144 thousand (177 thousand for the subclass of
uvicorn's protocol this replaces). The server figures are in docs/benchmarks.md.

A request line and headers over ``MAX_HEAD_BYTES`` are answered 431 and the
connection closed: httptools sets no bound of its own. A head that does not
complete within ``limits.head_timeout`` is answered 408 (a connection that
sends nothing is closed), and past ``limits.max_connections`` a new connection
is answered 503 (:meth:`HttpProtocol.configured`); uvicorn has neither. WebSocket and other
upgrades are not served (inferline has no such route): an upgrade request is
answered as a plain HTTP request, with a warning, as uvicorn does without a
WebSocket library.

A client that hangs up before its answer is complete cancels the app's task when
the request's scope says :data:`CANCEL_ON_DISCONNECT` (the app sets it on its
inference routes), as a gRPC cancel does; otherwise the app runs on and its
``receive`` says ``http.disconnect``, as on uvicorn's protocol.
"""

from inferline.transport.http1.connection import CANCEL_ON_DISCONNECT, MAX_HEAD_BYTES, HttpProtocol

__all__ = ["CANCEL_ON_DISCONNECT", "MAX_HEAD_BYTES", "TESTED_UVICORN", "HttpProtocol"]

#: The uvicorn minor releases whose internals (``Config``, ``ServerState``, flow control,
#: ``httptools_impl``'s regexes and status lines) this protocol was tested against;
#: pyproject.toml admits exactly these, and tests/transport/test_http1_uvicorn.py fails
#: on any other, so a uvicorn upgrade is a deliberate, tested change.
TESTED_UVICORN = ("0.55",)
