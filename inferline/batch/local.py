"""The single-machine engine: read, score and write chunks side by side, resumably.

Three stages overlap: a reader thread parses the next chunks (pyarrow releases
the GIL), ``workers`` threads score chunks through the data plane, and the calling
thread writes finished chunks in input order. Queues between them hold a few
chunks, so memory stays bounded whatever the input size.

After each written chunk its output is also kept as an Arrow IPC file and the
checkpoint is replaced atomically. A killed job resumes (``resume=True``) from
the last checkpoint: the output being written is rebuilt from the kept chunks,
the reject file is cut back to its checkpointed size, and reading starts at the
next chunk, so no row is lost or written twice.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from inferline.batch.io import Writer, jsonl_bytes, pyarrow, read_chunks, replace, row_count
from inferline.batch.job import Checkpoint, Job, Summary
from inferline.batch.progress import Progress
from inferline.batch.scoring import ChunkResult, Scorer

__all__ = ["run_local"]

_END = object()


def run_local(
    job: Job, scorer: Scorer, *, resume: bool, progress: Progress, workers: int
) -> Summary:
    started = time.monotonic()
    state = job.state_dir
    fingerprint = job.fingerprint()
    saved = Checkpoint.load(state, fingerprint)
    if saved is not None and not resume:
        raise ValueError(
            f"{state} holds a checkpoint of this unfinished job: pass --resume to continue "
            "it, or remove that folder to start again"
        )
    if saved is None:
        shutil.rmtree(state, ignore_errors=True)
        (state / "parts").mkdir(parents=True)
        saved = Checkpoint(fingerprint)
        saved.save(state)
    counts = [row_count(f, fmt) for f, fmt in zip(job.files, job.formats, strict=True)]
    total = sum(c for c in counts if c is not None) if None not in counts else None
    writer = _OutputWriter(job, scorer.schema, saved)
    progress.start(total, saved.offset)
    stop = threading.Event()
    chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
    reader = threading.Thread(
        target=_read, args=(job, scorer, saved, chunks, stop), name="inferline-batch-read"
    )
    reader.start()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="inferline-batch") as pool:
            pending: deque[tuple[Any, Future[ChunkResult] | None]] = deque()
            for item in _drain(chunks):
                kind, _, _, offset, table = item
                work = pool.submit(scorer.score, table, offset) if kind == "chunk" else None
                pending.append((item, work))
                while len(pending) > workers or (pending and pending[0][1] is None):
                    writer.take(*_done(pending.popleft()), progress)
            while pending:
                writer.take(*_done(pending.popleft()), progress)
        outputs = writer.finish()
    finally:
        stop.set()
        writer.abandon()
        reader.join()
        progress.close()
    shutil.rmtree(state, ignore_errors=True)
    final = writer.checkpoint
    return Summary(
        final.offset,
        final.scored,
        final.rejected,
        time.monotonic() - started,
        outputs,
        job.rejects if final.rejected else None,
    )


def _done(entry: tuple[Any, Future[ChunkResult] | None]) -> tuple[Any, ChunkResult | None]:
    item, work = entry
    return item, (work.result() if work is not None else None)


def _drain(chunks: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        item = chunks.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _read(
    job: Job, scorer: Scorer, start: Checkpoint, out: queue.Queue[Any], stop: threading.Event
) -> None:
    """Put ("chunk", file, chunk, first row, table) and ("end", file, ...) on ``out``."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        offset = start.offset
        columns = scorer.plan.read_columns
        for file in range(start.file, len(job.files)):
            first = start.chunk if file == start.file else 0
            fmt = job.formats[file]
            tables = read_chunks(
                job.files[file],
                fmt,
                job.chunk_rows,
                columns=columns,
                types=scorer.plan.text_types(fmt) if fmt != "parquet" else None,
                start_row=first * job.chunk_rows,
            )
            for chunk, table in enumerate(tables, start=first):
                if not put(("chunk", file, chunk, offset, table)):
                    return
                offset += table.num_rows
            if not put(("end", file, 0, offset, None)):
                return
        put(_END)
    except BaseException as exc:  # noqa: BLE001 - handed to the writing thread, which raises it
        put(exc)


class _OutputWriter:
    """Writes chunks in order, keeps them as parts, and advances the checkpoint."""

    def __init__(self, job: Job, schema: Any, checkpoint: Checkpoint) -> None:
        self.job = job
        self.schema = schema
        self.checkpoint = checkpoint
        self.state = job.state_dir
        self._file: Writer | None = None
        self._outputs: list[Path] = []
        rejects = self.state / "rejects.jsonl"
        rejects.touch()
        with rejects.open("r+b") as handle:
            handle.truncate(checkpoint.rejects_bytes)
        self._rejects: IO[bytes] = rejects.open("ab")

    def _partial(self, file: int) -> Path:
        name = f"{file:06d}" if self.job.per_file else "output"
        return self.state / f"{name}.partial"

    def _open(self, file: int) -> Writer:
        """The output being written, rebuilt from the parts a previous run finished."""
        if self._file is None:
            pa = pyarrow()
            self._file = Writer(self._partial(file), self.job.out_format, self.schema)
            for part in self.checkpoint.parts:
                with pa.memory_map(str(self.state / "parts" / part)) as source:
                    self._file.write(pa.ipc.open_file(source).read_all())
        return self._file

    def take(self, item: Any, result: ChunkResult | None, progress: Progress) -> None:
        kind, file, chunk, offset, _ = item
        point = self.checkpoint
        if kind == "end":
            self._end_file(file, offset)
            return
        if result is None:
            raise RuntimeError("a chunk without a result")
        self._open(file).write(result.table)
        part = f"{file:06d}-{chunk:06d}.arrow"
        _write_part(self.state / "parts" / part, result.table)
        rejected = result.rejects.num_rows
        if rejected:
            data = jsonl_bytes(result.rejects)
            self._rejects.write(data)
            self._rejects.flush()
            point.rejects_bytes += len(data)
        point.file, point.chunk = file, chunk + 1
        point.offset = offset + result.rows
        point.scored += result.table.num_rows
        point.rejected += rejected
        point.parts.append(part)
        point.save(self.state)
        progress.advance(result.rows, rejected)

    def _end_file(self, file: int, offset: int) -> None:
        point = self.checkpoint
        point.file, point.chunk, point.offset = file + 1, 0, offset
        if not self.job.per_file:
            point.save(self.state)
            return
        self._open(file).close()
        self._file = None
        replace(self._partial(file), self.job.target(file))
        self._outputs.append(self.job.target(file))
        done, point.parts = point.parts, []
        point.save(self.state)
        for part in done:
            (self.state / "parts" / part).unlink(missing_ok=True)

    def finish(self) -> list[Path]:
        self._rejects.close()
        rejects = self.state / "rejects.jsonl"
        if self.checkpoint.rejected:
            replace(rejects, self.job.rejects)
        else:
            self.job.rejects.unlink(missing_ok=True)
        if not self.job.per_file:
            self._open(0).close()
            self._file = None
            replace(self._partial(0), self.job.dest)
            return [self.job.dest]
        return self._outputs

    def abandon(self) -> None:
        """Close files after a failure; the checkpoint stays for ``--resume``."""
        if not self._rejects.closed:
            self._rejects.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_part(path: Path, table: Any) -> None:
    pa = pyarrow()
    temporary = path.with_suffix(".tmp")
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with (
        pa.OSFile(str(temporary), "wb") as sink,
        pa.ipc.new_file(sink, table.schema, options=options) as out,
    ):
        out.write_table(table)
    replace(temporary, path)
