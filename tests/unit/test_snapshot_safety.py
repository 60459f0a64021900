"""Snapshot safety: unsafe manifest paths, corrupt and missing objects, bad requests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from funart_runtime.snapshots import (
    InvalidSnapshotRequestError,
    SnapshotCorruptError,
    SnapshotNotFoundError,
    SnapshotStore,
    UnsafePathError,
)
from tests.unit.test_snapshot_support import describe_tree, make_env, write

SHA = "0" * 64


@pytest.fixture()
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


def write_manifest(store: SnapshotStore, name: str, root: Path,
                   entries: list[dict[str, Any]]) -> None:
    document = {
        "format_version": 1,
        "name": name,
        "created_at": "2025-01-01T00:00:00Z",
        "trees": [{"root": str(root), "entries": entries}],
    }
    store.manifests_dir.mkdir(parents=True, exist_ok=True)
    store.manifest_path(name).write_text(json.dumps(document))


def file_entry(path: str) -> dict[str, Any]:
    return {"path": path, "kind": "file", "mode": 0o644, "size": 1, "sha256": SHA}


UNSAFE_CASES = {
    "parent": [file_entry("../x")],
    "nested-parent": [{"path": "a", "kind": "dir", "mode": 0o755}, file_entry("a/../../x")],
    "absolute": [file_entry("/etc/x")],
    "under-symlink": [
        {"path": "link", "kind": "symlink", "mode": 0o777, "target": "/etc"},
        file_entry("link/x"),
    ],
    "under-file": [file_entry("f"), file_entry("f/x")],
    "no-parent": [file_entry("missing/x")],
    "nul": [file_entry("a\u0000b")],
    "dot": [file_entry("./x")],
    "duplicate": [file_entry("x"), file_entry("x")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE_CASES))
def test_unsafe_entry_rejected(store: SnapshotStore, tmp_path: Path, case: str) -> None:
    root = tmp_path / "restore-root"
    write_manifest(store, "evil", root, UNSAFE_CASES[case])

    with pytest.raises(UnsafePathError) as caught:
        store.restore("evil")

    assert caught.value.code == "UNSAFE_PATH"
    assert not root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


@pytest.mark.parametrize("root", ["relative/root", "/", "/tmp/../etc"])
def test_unsafe_root_rejected(store: SnapshotStore, root: str) -> None:
    write_manifest(store, "evil", Path(root), [])
    document = json.loads(store.manifest_path("evil").read_text())
    document["trees"][0]["root"] = root
    store.manifest_path("evil").write_text(json.dumps(document))

    with pytest.raises(UnsafePathError):
        store.restore("evil")


def test_root_containing_store_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    write_manifest(store, "evil", tmp_path, [])

    with pytest.raises(UnsafePathError):
        store.restore("evil")

    assert store.manifest_path("evil").exists()


def test_overlapping_roots_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")

    with pytest.raises(InvalidSnapshotRequestError):
        store.save("dev", [env["comfy"], env["comfy"] / "custom_nodes"])
    with pytest.raises(UnsafePathError):
        SnapshotStore(env["comfy"] / "store").save("dev", [env["comfy"]])


def test_corrupt_object_fails_restore(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    target = env["comfy"] / "main.py"
    store.save("dev", [env["comfy"]])
    write(target, "print('local edit')\n")
    before = describe_tree(env["comfy"])
    obj = flip_object_byte(store, "dev", "main.py")

    with pytest.raises(SnapshotCorruptError) as caught:
        store.restore("dev")

    assert str(obj) in caught.value.message
    assert str(target) in caught.value.message
    assert caught.value.details["reason"].startswith("corrupt")
    assert describe_tree(env["comfy"]) == before


def test_corrupt_object_fails_verify(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    store.save("dev", [env["comfy"]])
    obj = flip_object_byte(store, "dev", "main.py")

    with pytest.raises(SnapshotCorruptError) as caught:
        store.verify("dev")

    assert str(obj) in caught.value.message
    assert [item["object"] for item in caught.value.details["objects"]] == [str(obj)]


def test_missing_object_fails_restore(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    store.save("dev", [env["comfy"]])
    obj = object_path(store, "dev", "main.py")
    obj.unlink()
    shutil.rmtree(env["comfy"])

    with pytest.raises(SnapshotCorruptError) as caught:
        store.restore("dev")

    assert f"Object {obj} is missing" in caught.value.message
    assert str(env["comfy"] / "main.py") in caught.value.message
    assert not env["comfy"].exists()


def test_invalid_manifest_json(store: SnapshotStore) -> None:
    store.manifests_dir.mkdir(parents=True)
    store.manifest_path("broken").write_text("{not json")

    with pytest.raises(SnapshotCorruptError):
        store.restore("broken")
    assert store.list()[0].problem is not None


def test_newer_format_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    write_manifest(store, "future", tmp_path / "root", [])
    document = json.loads(store.manifest_path("future").read_text())
    document["format_version"] = 2
    store.manifest_path("future").write_text(json.dumps(document))

    with pytest.raises(SnapshotCorruptError, match="format_version is 2"):
        store.load("future")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 129, "sp ace"])
def test_invalid_names_rejected(store: SnapshotStore, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidSnapshotRequestError):
        store.save(name, [tmp_path])


def test_unknown_snapshot(store: SnapshotStore) -> None:
    with pytest.raises(SnapshotNotFoundError) as caught:
        store.restore("nope")

    assert caught.value.status == 404
    assert "nope" in caught.value.message


def test_missing_path_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidSnapshotRequestError, match="not a directory"):
        store.save("dev", [tmp_path / "absent"])


def test_non_utf8_name_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "ok").write_text("x")
    with open(os.path.join(os.fsencode(root), b"bad\xff"), "wb") as stream:
        stream.write(b"x")

    with pytest.raises(InvalidSnapshotRequestError, match="not valid UTF-8"):
        store.save("dev", [root])

    assert not store.manifest_path("dev").exists()


def object_path(store: SnapshotStore, name: str, relative: str) -> Path:
    manifest = store.load(name)
    entry = next(e for e in manifest.trees[0].entries if e.path == relative)
    assert entry.sha256 is not None
    return store.objects.path(entry.sha256)


def flip_object_byte(store: SnapshotStore, name: str, relative: str) -> Path:
    path = object_path(store, name, relative)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    return path


def test_symlinked_root_rejected(store: SnapshotStore, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    store.save("dev", [env["comfy"]])
    moved = tmp_path / "moved"
    env["comfy"].rename(moved)
    env["comfy"].symlink_to(moved)

    with pytest.raises(UnsafePathError, match="not a directory"):
        store.restore("dev")

    assert env["comfy"].is_symlink()
