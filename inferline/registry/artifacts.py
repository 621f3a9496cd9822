"""Content-addressed artifact folder: ``<root>/<sha[:2]>/<sha>/<file name>``.

An artifact is stored under its SHA-256 (a folder artifact under the hash of its
manifest), so two versions with the same bytes share one copy, a half-written
copy is never visible (written to a temporary name, then renamed) and every load
can check the bytes are still the ones registered.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from inferline.digests import tree_sha256
from inferline.errors import BadRequest, ModelLoadError

__all__ = ["ArtifactStore"]


class ArtifactStore:
    """Copies artifacts in by hash and hands out verified paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _object_dir(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BadRequest(f"invalid artifact hash {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, source: Path) -> tuple[str, str, int]:
        """Store a file or folder; returns (sha256, stored name, size in bytes)."""
        if not source.exists():
            raise BadRequest(f"artifact {source} does not exist")
        if source.is_symlink():
            raise BadRequest(f"artifact {source} is a symbolic link; give the real path")
        sha = tree_sha256(source)
        name = source.name
        target = self._object_dir(sha)
        size = _size(source)
        if (target / name).exists():
            return sha, name, size
        target.mkdir(parents=True, exist_ok=True)
        # Staged next to its final place (same file system), then renamed into the
        # object folder by name: the same bytes under another name, or a concurrent
        # writer of this very artifact, each find the folder there and add to it.
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
        try:
            if source.is_dir():
                shutil.copytree(source, staging / name, symlinks=False)
            else:
                shutil.copyfile(source, staging / name)
            try:
                os.rename(staging / name, target / name)  # a file replaces a twin atomically
            except OSError:
                # A folder cannot replace a non-empty folder: a concurrent twin won.
                if not (target / name).exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return sha, name, size

    def path(self, sha256: str, name: str, *, verify: bool = True) -> Path:
        """The stored artifact, checked against its hash; refuses anything outside root.

        ``verify=False`` is for callers that pin the hash for the loader instead,
        so a file is hashed once per load, not twice.
        """
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise BadRequest(f"invalid artifact name {name!r}")
        path = self._object_dir(sha256) / name
        root = self.root.resolve()
        if root not in path.resolve().parents:
            raise BadRequest(f"artifact path {path} is outside the artifact folder")
        if not path.exists():
            raise ModelLoadError(f"artifact {sha256[:12]}/{name} is missing from {self.root}")
        actual = tree_sha256(path) if verify else sha256
        if actual != sha256:
            raise ModelLoadError(
                f"artifact {name} ({sha256[:12]}) fails its integrity check: its bytes now "
                f"hash to {actual[:12]}; re-register the model"
            )
        return path


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
