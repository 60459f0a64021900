"""Snapshot save and restore round trips, incremental saves and base layering."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from funart_runtime.snapshots import SnapshotStore, SnapshotTimeoutError
from tests.unit.test_snapshot_support import (
    count_objects,
    describe_tree,
    make_env,
    write,
    write_random,
)


@pytest.fixture()
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, Path]:
    return make_env(tmp_path / "env")


def wipe(*roots: Path) -> None:
    for root in roots:
        shutil.rmtree(root)


def test_round_trip_every_kind(store: SnapshotStore, env: dict[str, Path]) -> None:
    before = {name: describe_tree(root) for name, root in env.items()}

    manifest = store.save("dev-1", list(env.values()))
    wipe(*env.values())
    report = store.restore("dev-1")

    assert {name: describe_tree(root) for name, root in env.items()} == before
    assert manifest.totals()["symlinks"] == 4
    assert report.unchanged == 0
    assert os.access(env["venv"] / "bin" / "python-wrapper", os.X_OK)
    assert os.readlink(env["venv"] / "bin" / "python3") == "/usr/bin/python3"
    assert (env["comfy"] / "output" / "empty").is_dir()
    assert (env["comfy"] / "custom_nodes" / "日本語ノード" / "__init__.py").is_file()


def test_round_trip_many_and_large(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "big"
    for index in range(10_000):
        write(root / f"pkg{index % 50}" / f"module_{index}.py", f"value = {index}\n")
    for index in range(3):
        write_random(root / "lib" / f"large{index}.so", 50 * 1024 * 1024)
    before = describe_tree(root)

    store.save("big", [root])
    wipe(root)
    report = store.restore("big")

    assert describe_tree(root) == before
    assert report.files_written == 10_003
    assert store.last_save is not None
    assert store.last_save.objects_written == 10_003


def test_unchanged_save_reads_nothing(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("dev", list(env.values()))
    objects = count_objects(store)

    store.save("dev", list(env.values()))

    assert store.last_save is not None
    assert store.last_save.files_hashed == 0
    assert store.last_save.bytes_hashed == 0
    assert store.last_save.files_reused == store.last_save.files
    assert count_objects(store) == objects


def test_save_reads_only_changed_files(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("dev", list(env.values()))
    write(env["comfy"] / "main.py", "print('changed')\n")
    write(env["comfy"] / "new.py", "new = True\n")

    store.save("dev", list(env.values()))

    assert store.last_save is not None
    assert store.last_save.files_hashed == 2
    assert store.last_save.objects_written == 2


def test_mode_change_saved_without_reading(store: SnapshotStore, env: dict[str, Path]) -> None:
    script = env["comfy"] / "main.py"
    store.save("dev", list(env.values()))
    script.chmod(0o755)

    manifest = store.save("dev", list(env.values()))

    assert store.last_save is not None
    assert store.last_save.files_hashed == 0
    entry = next(e for e in manifest.trees[0].entries if e.path == "main.py")
    assert entry.mode == 0o755


def test_base_layering_stores_only_new(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("base", list(env.values()))
    objects = count_objects(store)
    node = env["comfy"] / "custom_nodes" / "new-node"
    for index in range(20):
        write(node / f"file{index}.py", f"node = {index}\n")

    manifest = store.save("dev-1", list(env.values()), base="base")

    assert store.last_save is not None
    assert store.last_save.files_hashed == 20
    assert count_objects(store) == objects + 20
    assert manifest.base == "base"
    assert manifest.base_sha256 is not None


def test_base_given_as_manifest_file(store: SnapshotStore, env: dict[str, Path],
                                     tmp_path: Path) -> None:
    store.save("base", list(env.values()))
    base_file = tmp_path / "image" / "base.json"
    base_file.parent.mkdir()
    shutil.copy(store.manifest_path("base"), base_file)
    write(env["comfy"] / "extra.py", "extra = 1\n")

    manifest = store.save("dev", list(env.values()), base=str(base_file))

    assert store.last_save is not None
    assert store.last_save.files_hashed == 1
    assert manifest.base == str(base_file)


def test_file_base_missing_objects_stored(store: SnapshotStore, env: dict[str, Path],
                                          tmp_path: Path) -> None:
    store.save("base", list(env.values()))
    other = SnapshotStore(tmp_path / "other-store")
    before = {name: describe_tree(root) for name, root in env.items()}

    other.save("dev", list(env.values()), base=str(store.manifest_path("base")))
    wipe(*env.values())
    other.restore("dev")

    assert other.last_save is not None
    assert other.last_save.objects_written == other.last_save.files_hashed
    assert {name: describe_tree(root) for name, root in env.items()} == before


def test_restore_same_base_touches_changed(store: SnapshotStore, env: dict[str, Path]) -> None:
    comfy = env["comfy"]
    store.save("base", list(env.values()))
    untouched = [comfy / "comfyui_version.py", env["venv"] / "bin" / "python-wrapper"]
    identity = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in untouched}
    write(comfy / "custom_nodes" / "node-a" / "a.py", "a = 1\n")
    write(comfy / "custom_nodes" / "node-a" / "b.py", "b = 1\n")
    write(comfy / "main.py", "print('edited')\n")
    (comfy / "output" / "empty").rmdir()
    after_state = describe_tree(comfy)
    store.save("dev", list(env.values()), base="base")
    store.restore("base")

    report = store.restore("dev")

    assert report.files_written == 3
    assert report.dirs_created == 1
    assert report.deleted == 1
    assert report.unchanged > 0
    assert describe_tree(comfy) == after_state
    for path, (inode, mtime_ns) in identity.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime_ns), path


def test_restore_removes_extra_paths(store: SnapshotStore, env: dict[str, Path]) -> None:
    before = describe_tree(env["comfy"])
    store.save("dev", list(env.values()))
    write(env["comfy"] / "junk.txt", "junk")
    write(env["comfy"] / "custom_nodes" / "stray" / "deep" / "x.py", "x")
    (env["comfy"] / "output" / "empty" / "new-empty").mkdir()
    (env["comfy"] / "stray-link").symlink_to("/tmp")

    report = store.restore("dev")

    assert describe_tree(env["comfy"]) == before
    assert report.deleted == 4


def test_restore_replaces_changed_kinds(store: SnapshotStore, env: dict[str, Path]) -> None:
    comfy = env["comfy"]
    before = describe_tree(comfy)
    store.save("dev", [comfy])
    (comfy / "main.py").unlink()
    (comfy / "main.py").mkdir()
    shutil.rmtree(comfy / "output")
    write(comfy / "output", "now a file")
    (comfy / "models" / "checkpoints").unlink()
    write(comfy / "models" / "checkpoints", "now a file")

    store.restore("dev")

    assert describe_tree(comfy) == before


def test_restore_other_tree_in_full(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for index in range(30):
        write(root / f"f{index}.txt", f"first {index}")
    before = describe_tree(root)
    store.save("first", [root])
    shutil.rmtree(root)
    for index in range(30):
        write(root / f"f{index}.txt", f"other content {index}")

    report = store.restore("first")

    assert report.files_written == 30
    assert report.unchanged == 0
    assert describe_tree(root) == before


def test_full_restore_rewrites_everything(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("dev", list(env.values()))
    path = env["comfy"] / "main.py"
    inode = path.stat().st_ino

    report = store.restore("dev", full=True)

    assert report.unchanged == 0
    assert path.stat().st_ino != inode
    assert path.read_text() == "print('comfy')\n"


def test_restore_fixes_mode_only(store: SnapshotStore, env: dict[str, Path]) -> None:
    script = env["venv"] / "bin" / "python-wrapper"
    store.save("dev", list(env.values()))
    inode = script.stat().st_ino
    script.chmod(0o644)

    report = store.restore("dev")

    assert report.modes_fixed == 1
    assert report.files_written == 0
    assert script.stat().st_ino == inode
    assert os.access(script, os.X_OK)


def test_disk_symlink_in_dir_position(store: SnapshotStore, env: dict[str, Path],
                                      tmp_path: Path) -> None:
    comfy = env["comfy"]
    store.save("dev", [comfy])
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(comfy / "custom_nodes")
    (comfy / "custom_nodes").symlink_to(outside)

    store.restore("dev")

    assert not (comfy / "custom_nodes").is_symlink()
    assert (comfy / "custom_nodes" / "emoji-🎨" / "nodes.py").is_file()
    assert list(outside.iterdir()) == []


def test_deadline_keeps_previous_manifest(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("dev", list(env.values()))
    previous = store.manifest_path("dev").read_bytes()
    write(env["comfy"] / "new.py", "new")

    with pytest.raises(SnapshotTimeoutError):
        store.save("dev", list(env.values()), deadline=time.monotonic() - 1)

    assert store.manifest_path("dev").read_bytes() == previous


def test_latest_by_write_time(store: SnapshotStore, env: dict[str, Path]) -> None:
    store.save("dev-2", [env["comfy"]])
    store.save("dev-10", [env["comfy"]])
    store.save("prod", [env["comfy"]])
    os.utime(store.manifest_path("dev-2"), ns=(1, 1))

    assert store.latest("dev-") == "dev-10"
    assert store.latest() == "prod"
    assert store.latest("none-") is None


def test_special_files_skipped(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root / "a.txt", "a")
    os.mkfifo(root / "pipe")

    manifest = store.save("dev", [root])

    assert store.last_save is not None
    assert store.last_save.skipped == [str(root / "pipe")]
    assert [entry.path for entry in manifest.trees[0].entries] == ["a.txt"]
