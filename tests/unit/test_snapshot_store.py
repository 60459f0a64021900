"""Snapshot store maintenance: copy, list, delete and garbage collection."""

from __future__ import annotations

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
    """Make every object and temporary file look a day old to ``gc``."""
    for directory in (store.objects.objects_dir, store.temp_dir):
        for parent, _, files in os.walk(directory):
            for name in files:
                os.utime(os.path.join(parent, name), ns=(OLD_NS, OLD_NS))


def test_copy_is_instant_and_restores(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for index in range(5000):
        write(root / f"d{index % 40}" / f"f{index}.py", f"x = {index}\n")
    before = describe_tree(root)
    store.save("dev-7", [root])
    objects = count_objects(store)

    started = time.monotonic()
    store.copy("dev-7", "prod")
    elapsed = time.monotonic() - started

    assert elapsed < 0.5
    assert count_objects(store) == objects
    copied = store.load("prod")
    assert copied.name == "prod"
    assert copied.copied_from == "dev-7"
    shutil.rmtree(root)
    store.restore("prod")
    assert describe_tree(root) == before


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
