"""The HTTP/1.1 protocol runs only on a uvicorn it was tested with.

Why: ``transport/http1`` imports uvicorn internals (no stable API); a release that
renames one must fail here, loudly, not in a user's server.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version

from inferline.transport.http1 import TESTED_UVICORN

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _minor(version: str) -> str:
    release = Version(version).release
    return f"{release[0]}.{release[1]}"


def test_installed_uvicorn_is_a_tested_minor() -> None:
    assert _minor(uvicorn.__version__) in TESTED_UVICORN, (
        f"uvicorn {uvicorn.__version__} is not one transport/http1 was tested with "
        f"({', '.join(TESTED_UVICORN)}): run tests/transport/test_http1*.py against it, "
        "then add its minor to TESTED_UVICORN and pyproject.toml"
    )


def test_pyproject_admits_only_tested_minors() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (uvicorn_req,) = [Requirement(d) for d in dependencies if Requirement(d).name == "uvicorn"]
    for minor in TESTED_UVICORN:
        assert uvicorn_req.specifier.contains(f"{minor}.0")
    major, low = map(int, TESTED_UVICORN[0].split("."))
    for untested in (
        f"{major}.{low - 1}.9",
        f"{major}.{int(TESTED_UVICORN[-1].split('.')[1]) + 1}.0",
    ):
        assert not uvicorn_req.specifier.contains(untested), f"pyproject admits uvicorn {untested}"
