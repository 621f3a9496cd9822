"""What a batch job is (inputs, outputs, options) and where it has got to.

A job is identified by a fingerprint of its model version, input files (path,
size, modification time) and options; a checkpoint is only resumed by the same
job, so a changed input never mixes with old predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferline.batch.io import EXTENSION, expand, format_of

__all__ = ["COMPLETE", "FAILED", "PARTIAL", "Checkpoint", "Job", "Summary", "make_job"]

CHECKPOINT = "checkpoint.json"

#: Exit codes: every row scored; the job failed; it finished but rejected some rows.
COMPLETE, FAILED, PARTIAL = 0, 1, 3


@dataclass(slots=True)
class Summary:
    """What a finished job did."""

    rows: int
    scored: int
    rejected: int
    seconds: float
    outputs: list[Path]
    #: The reject file, or None when no row was rejected.
    rejects: Path | None
    #: The model version scored with, and how it was chosen (``alias production``...).
    version: str = ""
    chosen: str = ""

    @property
    def exit_code(self) -> int:
        return PARTIAL if self.rejected else COMPLETE


@dataclass(frozen=True, slots=True)
class Job:
    model: str
    version: str
    files: tuple[Path, ...]
    formats: tuple[str, ...]
    dest: Path
    out_format: str
    #: True: one output file per input file under ``dest``; False: ``dest`` is one file.
    per_file: bool
    keep: tuple[str, ...]
    features: tuple[str, ...] | None
    chunk_rows: int
    rejects: Path

    @property
    def state_dir(self) -> Path:
        """Checkpoint, finished chunks and the output being written; hidden beside the output."""
        if self.per_file:
            return self.dest / ".inferline-job"
        return self.dest.parent / f".{self.dest.name}.inferline-job"

    def target(self, index: int) -> Path:
        """Where the output of input file ``index`` goes."""
        if not self.per_file:
            return self.dest
        base = Path(os.path.commonpath([str(f.parent.resolve()) for f in self.files]))
        relative = self.files[index].resolve().relative_to(base)
        return self.dest / relative.with_suffix(EXTENSION[self.out_format])

    def fingerprint(self) -> str:
        files = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        described = {
            "model": self.model,
            "version": self.version,
            "files": files,
            "formats": self.formats,
            "dest": str(self.dest.resolve()),
            "out_format": self.out_format,
            "per_file": self.per_file,
            "keep": self.keep,
            "features": self.features,
            "chunk_rows": self.chunk_rows,
        }
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def make_job(
    model: str,
    version: str,
    source: Any,
    dest: str | Path,
    *,
    keep: tuple[str, ...] = (),
    features: tuple[str, ...] | None = None,
    out_format: str | None = None,
    input_format: str | None = None,
    chunk_rows: int = 65536,
    rejects: str | Path | None = None,
) -> Job:
    """Resolve inputs, formats and output paths; nothing is read or written yet."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    files = tuple(expand(source))
    formats = tuple(format_of(f, input_format) for f in files)
    target = Path(dest)
    per_file = str(dest).endswith(("/", os.sep)) or target.is_dir()
    if per_file:
        fmt = format_of(target, out_format) if out_format else formats[0]
        reject_path = Path(rejects) if rejects else target / "_rejects.jsonl"
    else:
        fmt = format_of(target, out_format)
        reject_path = Path(rejects) if rejects else target.with_name(f"{target.stem}.rejects.jsonl")
    return Job(
        model,
        version,
        files,
        formats,
        target,
        fmt,
        per_file,
        keep,
        features,
        chunk_rows,
        reject_path,
    )


@dataclass(slots=True)
class Checkpoint:
    """Progress after the last finished chunk; written atomically after each one."""

    fingerprint: str
    #: Next input file and chunk to read.
    file: int = 0
    chunk: int = 0
    #: Rows of the whole input read so far (the next chunk's first row number).
    offset: int = 0
    scored: int = 0
    rejected: int = 0
    #: Size of the reject file so far; anything after it is from an unfinished chunk.
    rejects_bytes: int = 0
    #: Finished chunks (Arrow IPC files) of the output file being written.
    parts: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        temporary = folder / f"{CHECKPOINT}.tmp"
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, folder / CHECKPOINT)

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> Checkpoint | None:
        """This job's checkpoint; None if there is none; an error if it is another job's."""
        path = folder / CHECKPOINT
        if not path.is_file():
            return None
        saved = cls(**json.loads(path.read_text()))
        if saved.fingerprint != fingerprint:
            raise ValueError(
                f"{folder} holds the checkpoint of a different job (model, inputs or options "
                "changed); remove that folder to start again"
            )
        return saved
