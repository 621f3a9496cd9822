"""SHA-256 of files and folders: how artifacts are pinned and verified everywhere."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

__all__ = ["sha256_of", "tree_sha256"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's sorted (relative path, file hash) manifest."""
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_of(file)}\n".encode())
    return digest.hexdigest()
