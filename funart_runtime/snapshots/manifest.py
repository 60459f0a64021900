"""The snapshot manifest: every path of every saved tree, and the environment it ran.

A manifest lists each tree in full, base content included, so restore, verify and gc
need no other manifest. ``base`` only records what the save was layered on.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SnapshotCorruptError, UnsafePathError

FORMAT_VERSION = 1
SHA256_PATTERN = "^[0-9a-f]{64}$"

EntryKind = Literal["file", "symlink", "dir"]


class Entry(BaseModel):
    """One path inside a saved tree, relative to the tree's root, with ``/`` separators.

    NOTE: owner, group, extended attributes and hard links are not saved. Restored
    files belong to the user who restores them, and hard-linked files become copies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    kind: EntryKind
    # Permission bits only (0o777): set-id and sticky bits are not saved.
    mode: int = Field(ge=0, le=0o777)
    size: int = Field(default=0, ge=0)
    mtime_ns: int = 0
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    target: str | None = None

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Entry:
        if self.kind == "file" and self.sha256 is None:
            raise ValueError(f"file entry {self.path!r} has no sha256")
        if self.kind == "symlink" and self.target is None:
            raise ValueError(f"symlink entry {self.path!r} has no target")
        return self


class Tree(BaseModel):
    """One saved directory tree and the absolute path it is restored to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str
    mode: int = Field(default=0o755, ge=0, le=0o777)
    mtime_ns: int = 0
    entries: list[Entry]


class CustomNode(BaseModel):
    """A ComfyUI custom node: git fields are null when it is not its own git checkout."""

    name: str
    path: str
    git_url: str | None = None
    commit: str | None = None
    dirty: bool | None = None


class ComfyUIFacts(BaseModel):
    """The ComfyUI tree found among the saved paths."""

    path: str
    version: str | None = None
    git_url: str | None = None
    commit: str | None = None
    dirty: bool | None = None


class Environment(BaseModel):
    """Facts about the interpreter and ComfyUI tree of a snapshot, null where unknown."""

    python: str | None = None
    python_version: str | None = None
    platform: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    # Lines of ``pip freeze``, or null when no interpreter was given or pip failed.
    packages: list[str] | None = None
    comfyui: ComfyUIFacts | None = None
    custom_nodes: list[CustomNode] = Field(default_factory=list)


class Manifest(BaseModel):
    """A named snapshot: its trees, the base it was saved on and its environment."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    created_at: datetime
    # A manifest name in the same store, or the absolute path of a manifest file.
    base: str | None = None
    base_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    copied_from: str | None = None
    trees: list[Tree]
    environment: Environment = Field(default_factory=Environment)

    def objects(self) -> set[str]:
        """Return the sha256 of every object the snapshot's files need."""
        return {
            entry.sha256
            for tree in self.trees
            for entry in tree.entries
            if entry.sha256 is not None
        }

    def totals(self) -> dict[str, int]:
        """Count files, symlinks, directories and file bytes over all trees."""
        counts = {"files": 0, "symlinks": 0, "dirs": 0, "bytes": 0}
        for tree in self.trees:
            for entry in tree.entries:
                counts[f"{entry.kind}s"] += 1
                counts["bytes"] += entry.size if entry.kind == "file" else 0
        return counts


def parse_manifest(data: bytes, source: str) -> Manifest:
    """Parse and check a manifest file's bytes; ``source`` names the file in errors.

    Raises SnapshotCorruptError for invalid JSON, an unknown format or a schema error,
    and UnsafePathError for any path that could write outside its restore root.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(source, f"it is not valid JSON ({exc})") from None

    version = document.get("format_version") if isinstance(document, dict) else None
    if version != FORMAT_VERSION:
        raise _corrupt(
            source,
            f"format_version is {version!r}, expected {FORMAT_VERSION}; a newer or older "
            "funart-runtime wrote it",
        )

    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _corrupt(source, f"{where}: {first['msg']}") from None

    check_manifest_paths(manifest, source)
    return manifest


def dump_manifest(manifest: Manifest) -> bytes:
    """Serialize a manifest as compact JSON (``show`` pretty-prints it)."""
    return manifest.model_dump_json().encode()


def check_manifest_paths(manifest: Manifest, source: str) -> None:
    """Raise UnsafePathError unless every root and entry path stays inside its tree.

    Roots must be absolute, normalized, not ``/`` and must not contain one another.
    An entry path must be relative, contain no empty, ``.`` or ``..`` component and no
    NUL byte, and its parent must be a directory entry of the same tree. The last rule
    rejects paths under a symlink or a file of the snapshot.
    """
    roots = [tree.root for tree in manifest.trees]
    for root in roots:
        _check_root(root, source)
    _check_disjoint(roots, source)

    for tree in manifest.trees:
        _check_entries(tree, source)


def _check_root(root: str, source: str) -> None:
    if "\x00" in root or not os.path.isabs(root) or os.path.normpath(root) != root:
        raise _unsafe(source, root, "", "a root must be an absolute, normalized path")
    if root == "/":
        raise _unsafe(source, root, "", "restoring onto / would replace the whole system")


def _check_disjoint(roots: list[str], source: str) -> None:
    overlap = find_overlap(roots)
    if overlap is not None:
        raise _unsafe(source, overlap[1], "", f"it overlaps the saved path {overlap[0]}")


def find_overlap(roots: list[str]) -> tuple[str, str] | None:
    """Return two roots where the second equals or is inside the first, or None.

    The roots must be absolute and normalized.
    """
    seen: set[str] = set()
    for root in roots:
        if root in seen:
            return root, root
        seen.add(root)

    for root in roots:
        parent = os.path.dirname(root)
        while parent != os.path.dirname(parent):
            if parent in seen:
                return parent, root
            parent = os.path.dirname(parent)
    return None


def _check_entries(tree: Tree, source: str) -> None:
    kinds: dict[str, str] = {}
    for entry in tree.entries:
        _check_relative(tree.root, entry, source)
        if entry.path in kinds:
            raise _unsafe(source, tree.root, entry.path, "the path is listed twice")
        kinds[entry.path] = entry.kind

    for entry in tree.entries:
        parent = entry.path.rpartition("/")[0]
        if not parent:
            continue
        parent_kind = kinds.get(parent)
        if parent_kind == "symlink":
            raise _unsafe(source, tree.root, entry.path, f"its parent {parent} is a symlink")
        if parent_kind != "dir":
            raise _unsafe(
                source, tree.root, entry.path, f"its parent {parent} is not a directory entry"
            )


def _check_relative(root: str, entry: Entry, source: str) -> None:
    path = entry.path
    if "\x00" in path or (entry.target is not None and "\x00" in entry.target):
        raise _unsafe(source, root, path, "it contains a NUL byte")
    if path.startswith("/"):
        raise _unsafe(source, root, path, "it is absolute")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _unsafe(source, root, path, "it has an empty, '.' or '..' component")


def _unsafe(source: str, root: str, path: str, reason: str) -> UnsafePathError:
    where = f"{root!r}" if not path else f"{path!r} in tree {root!r}"
    return UnsafePathError(
        f"Manifest {source} has an unsafe path {where}: {reason}. Nothing was written; "
        "fix or delete the manifest.",
        details={"manifest": source, "root": root, "path": path, "reason": reason},
    )


def _corrupt(source: str, reason: str) -> SnapshotCorruptError:
    return SnapshotCorruptError(
        f"Manifest {source} is invalid: {reason}.",
        details={"manifest": source, "reason": reason},
    )


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """Return the fields ``list`` prints for one manifest."""
    return {
        "name": manifest.name,
        "created_at": manifest.created_at.isoformat(),
        "base": manifest.base,
        **manifest.totals(),
    }
