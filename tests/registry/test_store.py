"""The registry store on SQLite and PostgreSQL: versions, aliases, history, audit, safety."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from inferline.errors import BadRequest, Conflict, ModelLoadError, ModelNotFound
from inferline.registry.store import Registry

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}


def artifact(tmp_path: Path, content: bytes, name: str = "model.onnx") -> Path:
    folder = tmp_path / content.hex()[:16]
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def add(registry: Registry, tmp_path: Path, content: bytes, name: str = "fraud") -> int:
    record = registry.register(
        name, artifact(tmp_path, content), runtime="onnx", signature=SIGNATURE, actor="tester"
    )
    return record.version


def test_versions_are_monotonic_and_metadata_kept(registry: Registry, tmp_path: Path) -> None:
    first = registry.register(
        "fraud",
        artifact(tmp_path, b"one"),
        runtime="onnx",
        signature=SIGNATURE,
        description="first",
        tags={"team": "risk"},
        metrics={"auc": 0.91},
        actor="alice",
    )
    assert first.version == 1 and first.size == 3 and first.tags == {"team": "risk"}
    assert first.metrics == {"auc": 0.91} and first.description == "first"
    assert add(registry, tmp_path, b"two") == 2
    registry.delete_version("fraud", 2)
    assert add(registry, tmp_path, b"three") == 3  # a deleted number is never reused
    assert registry.model_names() == ["fraud"]
    assert [v.version for v in registry.versions("fraud")] == sorted(
        v.version for v in registry.versions("fraud")
    )


def test_resolve_aliases_and_latest(registry: Registry, tmp_path: Path) -> None:
    add(registry, tmp_path, b"a")
    add(registry, tmp_path, b"b")
    assert registry.resolve("fraud").version == 2  # no production alias: the latest
    registry.set_alias("fraud", "production", 1)
    registry.set_alias("fraud", "staging", 2)
    assert registry.resolve("fraud").version == 1
    assert registry.resolve("fraud", "staging").version == 2
    assert registry.resolve("fraud", "2").version == 2
    assert registry.get("fraud", 1).aliases == ("production",)
    with pytest.raises(ModelNotFound, match="no alias 'canary'; aliases: production, staging"):
        registry.resolve("fraud", "canary")
    with pytest.raises(ModelNotFound, match="has no version 7"):
        registry.set_alias("fraud", "production", 7)


def test_rollback_walks_back_through_history(registry: Registry, tmp_path: Path) -> None:
    for content in (b"1", b"2", b"3"):
        add(registry, tmp_path, content)
    for version in (1, 2, 3):
        registry.set_alias("fraud", "production", version)
    assert registry.rollback_target("fraud") == 2
    registry.set_alias("fraud", "production", 2, kind="rollback")
    assert registry.rollback_target("fraud") == 1
    registry.set_alias("fraud", "production", 1, kind="rollback")
    with pytest.raises(Conflict, match="no earlier version"):
        registry.rollback_target("fraud")
    events = registry.history("fraud")
    assert [(e.version, e.previous, e.kind) for e in events] == [
        (1, None, "move"),
        (2, 1, "move"),
        (3, 2, "move"),
        (2, 3, "rollback"),
        (1, 2, "rollback"),
    ]


def test_delete_refused_while_aliased(registry: Registry, tmp_path: Path) -> None:
    add(registry, tmp_path, b"a")
    registry.set_alias("fraud", "production", 1)
    with pytest.raises(Conflict, match="pointed at by alias\\(es\\) production"):
        registry.delete_version("fraud", 1)
    assert [v.version for v in registry.versions("fraud")] == [1]


def test_audit_log_records_who_and_what(registry: Registry, tmp_path: Path) -> None:
    add(registry, tmp_path, b"a")
    registry.set_alias("fraud", "production", 1, actor="bob")
    registry.record("promote", "fraud", 2, "refused: broken", ok=False, actor="carol")
    entries = registry.audit("fraud")
    assert [(e.action, e.actor, e.ok) for e in entries] == [
        ("promote", "carol", False),
        ("alias:move", "bob", True),
        ("register", "tester", True),
    ]


def test_generation_grows_on_every_change(registry: Registry, tmp_path: Path) -> None:
    start = registry.generation()
    add(registry, tmp_path, b"a")
    registry.set_alias("fraud", "production", 1)
    assert registry.generation() == start + 2


def test_identical_artifacts_share_one_copy_and_are_verified(
    registry: Registry, tmp_path: Path
) -> None:
    add(registry, tmp_path, b"same")
    add(registry, tmp_path, b"same")
    one, two = registry.versions("fraud")
    assert one.sha256 == two.sha256
    path = registry.artifacts.path(one.sha256, one.artifact)
    assert path.read_bytes() == b"same"
    path.write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match="fails its integrity check"):
        registry.artifacts.path(one.sha256, one.artifact)


@pytest.mark.parametrize(
    "name", ["../etc", "a/b", "..", ".hidden", "", "x" * 200, "a\x00b", "a..b"]
)
def test_hostile_names_are_refused(registry: Registry, tmp_path: Path, name: str) -> None:
    with pytest.raises(BadRequest, match="invalid model name"):
        registry.register(name, artifact(tmp_path, b"x"), runtime="onnx", signature=SIGNATURE)
    assert registry.model_names() == []


@pytest.mark.parametrize(
    ("sha", "name"),
    [("../" * 10 + "etc", "passwd"), ("a" * 64, "../../../etc/passwd"), ("a" * 64, "..")],
)
def test_artifact_paths_cannot_escape(registry: Registry, sha: str, name: str) -> None:
    with pytest.raises(BadRequest):
        registry.artifacts.path(sha, name)


def _register_many(url: str, root: str, tmp: str, worker: int, count: int) -> None:
    store = Registry(url, Path(root))
    for i in range(count):
        path = Path(tmp) / f"w{worker}-{i}.onnx"
        path.write_bytes(f"{worker}-{i}".encode())
        store.register("race", path, runtime="onnx", signature=SIGNATURE)
    store.close()


def test_concurrent_registrations_never_share_a_number(registry_url: str, tmp_path: Path) -> None:
    first = Registry(registry_url, tmp_path / "artifacts")
    first.generation()  # create the schema once
    first.close()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_register_many,
            args=(registry_url, str(tmp_path / "artifacts"), str(tmp_path), w, 8),
        )
        for w in range(4)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    store = Registry(registry_url, tmp_path / "artifacts")
    numbers = [v.version for v in store.versions("race")]
    store.close()
    assert numbers == list(range(1, 33))


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "0", "-3", "1234567890"])
def test_parse_version_refuses_what_is_not_a_plain_positive_number(text: str) -> None:
    from inferline.errors import BadRequest
    from inferline.registry.records import parse_version
    from inferline.repository import version_key

    with pytest.raises(BadRequest, match="invalid version"):
        parse_version(text)
    assert version_key("\u00b2") == (0, "\u00b2")  # a named version, not a crash
