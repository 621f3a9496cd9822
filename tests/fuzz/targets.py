"""atheris fuzz targets for the parsers that read bytes from the network.

Run one: ``python tests/fuzz/targets.py NAME [libFuzzer flags] [corpus dir]``.
tests/fuzz/test_fuzz.py runs each for a bounded time with a memory cap; a target
fails on any exception the parser does not declare, on a crash, and on an input
that makes it allocate past ``-rss_limit_mb`` (a size taken before it was checked).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["inferline"]):
    from inferline import codecs
    from inferline.errors import InferlineError
    from inferline.protocols import _grpc_codec
    from inferline.transport import grpc_wire
    from inferline.transport.grpc_h2.hpack import Decoder, HpackError

#: The limits `inferline serve` applies by default (settings: max_tensors, max_elements).
LIMITS = {"max_tensors": 256, "max_elements": 1 << 24}


def v2_json(data: bytes) -> None:
    """A V2 REST body: JSON alone, or JSON then binary tensors (the first byte splits)."""
    if not data:
        return
    split = data[0] * len(data) // 256 if data[0] & 1 else None
    try:
        request = codecs.decode_request(data[1:], split, **LIMITS)
        for tensor in request.inputs:
            codecs.checked_shape(tensor.name, tensor.shape)
    except InferlineError:
        pass


def grpc_infer(data: bytes) -> None:
    """A ``ModelInferRequest`` on the wire: the hand-written reader, then the protobuf runtime."""
    grpc_wire.parse_request(data)  # None for anything it does not handle; never raises
    with contextlib.suppress(InferlineError):
        _grpc_codec.decode_infer(data, **LIMITS)


def hpack_block(data: bytes) -> None:
    """Header blocks of one connection, in turn (they share the dynamic table)."""
    decoder = Decoder()
    for block in data.split(b"\xff\xfe\xfd"):
        try:
            decoder.decode(block)
        except HpackError:
            return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "v2_json": v2_json,
    "grpc_infer": grpc_infer,
    "hpack_block": hpack_block,
}


def main() -> None:
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
