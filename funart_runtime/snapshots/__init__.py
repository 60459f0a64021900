"""Snapshot store: save and restore the directory trees that run ComfyUI, on NAS.

Use ``SnapshotStore`` from Python and ``add_snapshot_commands`` for ``funart snapshot``.
"""

from __future__ import annotations

from .errors import (
    InvalidSnapshotRequestError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotNotFoundError,
    SnapshotTimeoutError,
    UnsafePathError,
)
from .manifest import FORMAT_VERSION, Entry, Environment, Manifest, Tree
from .restore import RestoreReport
from .scan import SaveReport
from .store import GcReport, SnapshotInfo, SnapshotStore, VerifyReport

__all__ = [
    "FORMAT_VERSION",
    "Entry",
    "Environment",
    "GcReport",
    "InvalidSnapshotRequestError",
    "Manifest",
    "RestoreReport",
    "SaveReport",
    "SnapshotCorruptError",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "SnapshotStore",
    "SnapshotTimeoutError",
    "Tree",
    "UnsafePathError",
    "VerifyReport",
]
