"""The content-addressed artifact folder: same bytes under other names, concurrent writers."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inferline.digests import sha256_of
from inferline.registry.artifacts import ArtifactStore
from inferline.registry.store import Registry

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_same_bytes_under_another_name_are_stored_and_verified(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first = store.put(write(tmp_path / "a", "model.onnx", b"same bytes"))
    second = store.put(write(tmp_path / "b", "renamed.onnx", b"same bytes"))
    assert first[0] == second[0] == sha256_of(tmp_path / "a" / "model.onnx")
    assert (first[1], second[1]) == ("model.onnx", "renamed.onnx")
    for _, name, _ in (first, second):
        assert store.path(first[0], name).read_bytes() == b"same bytes"


def test_same_folder_artifact_under_another_name(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    for name in ("model-a", "model-b"):
        write(tmp_path / "src" / name, "MLmodel", b"flavors: {}\n")
        write(tmp_path / "src" / name, "weights.bin", b"\x00\x01")
    sha_a, _, _ = store.put(tmp_path / "src" / "model-a")
    sha_b, _, _ = store.put(tmp_path / "src" / "model-b")
    assert sha_a == sha_b
    assert (store.path(sha_a, "model-b") / "weights.bin").read_bytes() == b"\x00\x01"


def test_registry_takes_the_same_bytes_under_two_file_names(
    registry: Registry, tmp_path: Path
) -> None:
    registry.register(
        "fraud", write(tmp_path / "a", "a.onnx", b"bytes"), runtime="onnx", signature=SIGNATURE
    )
    registry.register(
        "fraud", write(tmp_path / "b", "b.onnx", b"bytes"), runtime="onnx", signature=SIGNATURE
    )
    one, two = registry.versions("fraud")
    assert one.sha256 == two.sha256 and (one.artifact, two.artifact) == ("a.onnx", "b.onnx")
    assert registry.artifacts.path(two.sha256, two.artifact).read_bytes() == b"bytes"


def test_concurrent_threads_store_one_artifact_under_many_names(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    sources = [write(tmp_path / f"src{i}", f"m{i % 4}.onnx", b"x" * 100_000) for i in range(16)]
    start = threading.Barrier(len(sources))

    def put(source: Path) -> tuple[str, str, int]:
        start.wait()
        return store.put(source)

    with ThreadPoolExecutor(len(sources)) as pool:
        results = list(pool.map(put, sources))
    assert len({sha for sha, _, _ in results}) == 1
    sha = results[0][0]
    for i in range(4):
        assert store.path(sha, f"m{i}.onnx").read_bytes() == b"x" * 100_000
    leftovers = [p.name for p in (tmp_path / "artifacts" / sha[:2]).iterdir()]
    assert leftovers == [sha]  # no staging folder left behind


def _put_in_process(root: str, source: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait(60)
    ArtifactStore(Path(root)).put(Path(source))


def test_concurrent_processes_store_one_artifact(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    sources = [write(tmp_path / f"src{i}", f"m{i % 2}.onnx", b"y" * 100_000) for i in range(4)]
    workers = [
        context.Process(target=_put_in_process, args=(str(tmp_path / "artifacts"), str(s), start))
        for s in sources
    ]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    store = ArtifactStore(tmp_path / "artifacts")
    sha = sha256_of(sources[0])
    for name in ("m0.onnx", "m1.onnx"):
        assert store.path(sha, name).read_bytes() == b"y" * 100_000
