"""Helpers for the snapshot tests: build synthetic trees and describe them for comparison.

This module has no tests of its own; the other ``test_snapshot_*`` modules import it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

from funart_runtime.snapshots import SnapshotStore

PYTHON = sys.executable
CHUNK = 1024 * 1024


def describe_tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Map every path under ``root`` ("." for the root) to its kind, mode, content and mtime."""
    state: dict[str, tuple[object, ...]] = {}
    info = os.lstat(root)
    state["."] = ("dir", stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            state[relative] = describe_path(path)
    return state


def describe_path(path: str) -> tuple[object, ...]:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", mode, info.st_mtime_ns)
    return ("file", mode, file_sha256(path), info.st_size, info.st_mtime_ns)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write(path: Path, content: bytes | str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if mode is not None:
        path.chmod(mode)
    return path


def write_random(path: Path, size: int) -> Path:
    """Write ``size`` random bytes in 1 MiB chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        remaining = size
        while remaining:
            chunk = min(CHUNK, remaining)
            stream.write(os.urandom(chunk))
            remaining -= chunk
    return path


def make_env(root: Path) -> dict[str, Path]:
    """Build a small ComfyUI-like tree and virtualenv with every entry kind."""
    comfy = root / "ComfyUI"
    venv = root / "venv"
    write(comfy / "main.py", "print('comfy')\n")
    write(comfy / "comfyui_version.py", '__version__ = "0.3.75"\n')
    write(comfy / "custom_nodes" / "日本語ノード" / "__init__.py", "NODE_CLASS_MAPPINGS = {}\n")
    write(comfy / "custom_nodes" / "emoji-🎨" / "nodes.py", "x = 1\n")
    (comfy / "models").mkdir()
    (comfy / "output" / "empty").mkdir(parents=True)
    write(venv / "bin" / "python-wrapper", "#!/bin/sh\nexec python3 \"$@\"\n", 0o755)
    write(venv / "bin" / "readonly.txt", "read only\n", 0o444)
    write(venv / "lib" / "site-packages" / "pkg" / "__init__.py", "VERSION = 1\n")
    (venv / "bin" / "python3").symlink_to("/usr/bin/python3")
    (venv / "bin" / "python").symlink_to("python3")
    (venv / "lib64").symlink_to("lib")
    (comfy / "models" / "checkpoints").symlink_to("/mnt/auto/models/checkpoints")
    return {"comfy": comfy, "venv": venv}


def count_objects(store: SnapshotStore) -> int:
    return sum(len(files) for _, _, files in os.walk(store.objects.objects_dir))
