"""Errors of the snapshot store, all subclasses of ``FunartError``."""

from __future__ import annotations

from ..errors import FunartError


class SnapshotError(FunartError):
    """Base of every snapshot store failure."""

    code = "SNAPSHOT_ERROR"


class SnapshotNotFoundError(SnapshotError):
    status = 404
    code = "SNAPSHOT_NOT_FOUND"


class SnapshotCorruptError(SnapshotError):
    """A manifest that does not parse, or an object that is missing or fails its sha256."""

    code = "SNAPSHOT_CORRUPT"


class UnsafePathError(SnapshotError):
    """A manifest path that would write outside its restore root."""

    status = 400
    code = "UNSAFE_PATH"


class InvalidSnapshotRequestError(SnapshotError):
    """A bad snapshot name, a missing or overlapping saved path, or a name that is not UTF-8."""

    status = 400
    code = "INVALID_SNAPSHOT_REQUEST"


class SnapshotTimeoutError(SnapshotError):
    status = 504
    code = "SNAPSHOT_TIMEOUT"
