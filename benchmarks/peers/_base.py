"""What every peer server knows: its venv, its model folder, its command, its wire format."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

APPS = Path(__file__).resolve().parent / "apps"
#: The venv the harness itself runs in (inferline's); peers never install into it.
HOST_PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class Scenario:
    """One timed run: which model, how many rows per request, how many connections."""

    key: str
    title: str
    #: "forest" / "logreg" (ONNX) or "forest_sk" / "logreg_sk" (scikit-learn).
    model: str
    rows: int
    connections: int
    transport: str = "rest"
    #: Peers that take part; empty means every peer that serves ``model``.
    only: tuple[str, ...] = ()
    #: Server processes; more than one runs unpinned (server and load generator share cores).
    workers: int = 1


@dataclass
class Layout:
    """Where a peer's venv and model folder live, and which ports its server gets."""

    venv: Path
    folder: Path
    models: Path
    http_port: int
    grpc_port: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


class Peer:
    """A model server the harness can install, configure, start and call."""

    name: ClassVar[str]
    title: ClassVar[str]
    #: pip requirements for its own venv; empty: run in inferline's venv (no install).
    requirements: ClassVar[tuple[str, ...]] = ()
    #: Models it serves (keys of ``Scenario.model``).
    serves: ClassVar[frozenset[str]] = frozenset({"forest", "logreg"})
    grpc: ClassVar[bool] = False
    #: Check the answer against the model in process (False only for the hello-world ceiling).
    checked: ClassVar[bool] = True
    #: Extra note for the results table (configuration chosen, and why).
    note: ClassVar[str] = ""

    # -- install -----------------------------------------------------------------------
    def ensure_venv(self, root: Path, log: Path) -> Path:
        """Create ``root/<name>`` with ``requirements`` unless it already matches them."""
        if not self.requirements:
            return HOST_PYTHON.parent.parent
        venv = root / self.name
        stamp = venv / ".requirements"
        wanted = "\n".join(self.requirements) + "\n"
        if stamp.exists() and stamp.read_text() == wanted:
            return venv
        print(f"  installing {self.name} into {venv} (once) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        with log.open("a") as out:
            subprocess.run([*pip, "--upgrade", "pip"], stdout=out, stderr=out, check=True)
            subprocess.run([*pip, *self.requirements], stdout=out, stderr=out, check=True)
            names = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        if any(line.lower().startswith("torch==") for line in names.splitlines()):
            raise SystemExit(f"{self.name}: its requirements pulled in torch; refusing")
        stamp.write_text(wanted)
        return venv

    # -- serve -------------------------------------------------------------------------
    def prepare(self, layout: Layout, artifacts: dict[str, Path]) -> None:
        """Write the model folder / config the server reads."""

    def command(self, layout: Layout) -> list[str]:
        raise NotImplementedError

    def env(self, layout: Layout) -> dict[str, str]:
        return dict(os.environ)

    def ready_path(self) -> str:
        return "/v2/health/ready"

    # -- call --------------------------------------------------------------------------
    def url(self, layout: Layout, model: str) -> str:
        return f"http://127.0.0.1:{layout.http_port}/v2/models/{model}/infer"

    def body(self, model: str, rows: np.ndarray[Any, Any]) -> bytes:
        return v2_body(rows)

    def outputs(self, answer: Any) -> dict[str, np.ndarray[Any, Any]]:
        return v2_outputs(answer)


def v2_body(rows: np.ndarray[Any, Any]) -> bytes:
    import json

    datatype = "FP64" if rows.dtype == np.float64 else "FP32"
    tensor = {
        "name": "input",
        "datatype": datatype,
        "shape": list(rows.shape),
        "data": rows.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def v2_outputs(answer: Any) -> dict[str, np.ndarray[Any, Any]]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.get("outputs", [])}
