"""The servers the harness compares, by name (the order of the table)."""

from __future__ import annotations

from peers._base import Layout, Peer, Scenario
from peers.bentoml import BentoML
from peers.fastapi import FastAPI
from peers.hello import Hello
from peers.inferline import (
    Inferline,
    InferlineBare,
    InferlineGrpcio,
    InferlineLogged,
    InferlineNative,
    InferlineObserved,
)
from peers.kserve import KServe
from peers.mlserver import MLServer

__all__ = ["PEERS", "Layout", "Peer", "Scenario"]

PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Inferline(),
        MLServer(),
        KServe(),
        BentoML(),
        FastAPI(),
        Hello(),
        InferlineBare(),
        InferlineObserved(),
        InferlineLogged(),
        InferlineGrpcio(),
        InferlineNative(),
    )
}
