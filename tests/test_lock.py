"""constraints.txt pins every dependency pyproject.toml names, within its bounds.

Why: `make test`, `make demo` and CI install from the lock; a requirement added to
pyproject.toml without `make lock` would reach a fresh machine unpinned.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_pinned_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [
        Requirement(r)
        for extra in project["optional-dependencies"].values()
        for r in extra
        if not r.startswith("inferline[")
    ]
    pins = _pins()
    unpinned = sorted({r.name for r in requirements if canonicalize_name(r.name) not in pins})
    assert not unpinned, f"run `make lock`: constraints.txt does not pin {unpinned}"
    outside = [
        f"{r} (locked {pins[canonicalize_name(r.name)]})"
        for r in requirements
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"run `make lock`: constraints.txt is outside pyproject's bounds: {outside}"
