"""Snapshot store maintenance: copy, list, delete and garbage collection."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from funart_runtime.snapshots import SnapshotNotFoundError, SnapshotStore
from tests.unit.test_snapshot_support import count_objects, describe_tree, make_env, write

OLD_NS = 1_000_000_000


@pytest.fixture()
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


def age_everything(store: SnapshotStore) -> None:
    """Set every object and temporary file to an mtime older than any grace period."""
    for directory in (store.objects.objects_dir, store.temp_dir):
        for parent, _, files in os.walk(directory):
            for name in files:
                os.utime(os.path.join(parent, name), ns=(OLD_NS, OLD_NS))


def test_copy_large_manifest_instant(store: SnapshotStore, tmp_path: Path) -> None:
    entries = [{"path": f"f{index}.py", "kind": "file", "mode": 0o644, "size": 10,
                "mtime_ns": index, "sha256": f"{index:064x}"} for index in range(50_000)]
    document = {"format_version": 1, "name": "dev-7", "created_at": "2025-01-01T00:00:00Z",
                "trees": [{"root": str(tmp_path / "tree"), "entries": entries}]}
    write(store.manifest_path("dev-7"), json.dumps(document))

    started = time.monotonic()
    store.copy("dev-7", "prod")
    elapsed = time.monotonic() - started

    assert elapsed < 0.5
    assert count_objects(store) == 0
    copied = json.loads(store.manifest_path("prod").read_text())
    assert copied["name"] == "prod"
    assert copied["copied_from"] == "dev-7"
    assert copied["trees"] == document["trees"]


def test_copy_restores(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    before = {name: describe_tree(root) for name, root in env.items()}
    store.save("dev-7", list(env.values()))
    objects = count_objects(store)

    store.copy("dev-7", "prod")
    for root in env.values():
        shutil.rmtree(root)
    store.restore("prod")

    assert count_objects(store) == objects
    assert store.load("prod").copied_from == "dev-7"
    assert {name: describe_tree(root) for name, root in env.items()} == before


def test_list_and_delete(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    store.save("base", list(env.values()))
    store.save("dev-1", list(env.values()), base="base")

    infos = {info.name: info for info in store.list()}

    assert sorted(infos) == ["base", "dev-1"]
    assert infos["dev-1"].base == "base"
    assert infos["dev-1"].files == 7
    assert infos["dev-1"].symlinks == 4
    store.delete("dev-1")
    assert [info.name for info in store.list()] == ["base"]
    with pytest.raises(SnapshotNotFoundError):
        store.delete("dev-1")


def test_gc_removes_only_old_garbage(store: SnapshotStore, tmp_path: Path) -> None:
    old_tree = tmp_path / "old"
    write(old_tree / "gone.txt", "only in the deleted snapshot")
    write(old_tree / "shared.txt", "in both snapshots")
    store.save("old", [old_tree])
    kept_tree = tmp_path / "kept"
    write(kept_tree / "shared.txt", "in both snapshots")
    store.save("kept", [kept_tree])
    store.delete("old")
    write(store.temp_dir / "object-1-stale", "from a killed save")
    age_everything(store)
    write(store.temp_dir / "object-2-fresh", "from a running save")
    young_tree = tmp_path / "young"
    write(young_tree / "young.txt", "written just now")
    store.save("young", [young_tree])
    store.delete("young")

    report = store.gc(grace_s=3600)

    assert report.objects_removed == 1
    assert report.temp_removed == 1
    assert report.objects_kept == 2
    assert sorted(p.name for p in store.temp_dir.iterdir()) == ["object-2-fresh"]
    assert store.verify("kept").objects == 1
    assert store.gc(grace_s=0).objects_removed == 1
    assert count_objects(store) == 1


def test_gc_keeps_base_objects(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    store.save("base", list(env.values()))
    write(env["comfy"] / "node.py", "node")
    store.save("dev", list(env.values()), base="base")
    store.delete("dev")
    age_everything(store)

    report = store.gc(grace_s=0)

    assert report.objects_removed == 1
    assert store.verify("base").objects == count_objects(store)


def test_gc_stops_on_unreadable_manifest(store: SnapshotStore, tmp_path: Path) -> None:
    write(tmp_path / "tree" / "a.txt", "a")
    store.save("good", [tmp_path / "tree"])
    store.manifest_path("broken").write_text("{")
    store.delete("good")

    with pytest.raises(Exception, match="Garbage collection stopped"):
        store.gc(grace_s=0)

    assert count_objects(store) == 1
