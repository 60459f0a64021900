"""Walk saved trees into manifest entries, hashing only files whose stat changed."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InvalidSnapshotRequestError, SnapshotTimeoutError
from .manifest import Entry, Tree
from .objects import ObjectStore, StoredFile

logger = logging.getLogger(__name__)

# Test hook: seconds to sleep before hashing each file, so that a test can kill a save
# while it is under way. Unset or 0 in production.
FILE_DELAY_ENV = "FUNART_SNAPSHOT_TEST_FILE_DELAY_S"
_DEADLINE_CHECK_EVERY = 256


@dataclass(frozen=True)
class KnownFile:
    """A file entry of the previous or base manifest, keyed by root and path.

    ``trusted`` is True when a manifest in the store references the object, which
    guarantees that it exists. A base read from a file outside the store is not trusted,
    so its objects are checked and missing ones are stored from disk.
    """

    size: int
    mtime_ns: int
    sha256: str
    trusted: bool


@dataclass
class SaveReport:
    """Counters of one save: what the trees contain and what had to be read and written."""

    name: str = ""
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    files_reused: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    objects_written: int = 0
    bytes_written: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TreeScanner:
    """Turn directory trees into ``Tree`` entries, storing new content as objects."""

    def __init__(
        self,
        objects: ObjectStore,
        known: dict[str, dict[str, KnownFile]],
        pool: ThreadPoolExecutor,
        deadline: float | None,
        report: SaveReport,
    ) -> None:
        self.objects = objects
        self.known = known
        self.pool = pool
        self.deadline = deadline
        self.report = report
        self._lock = threading.Lock()
        self._file_delay_s = float(os.environ.get(FILE_DELAY_ENV) or 0)

    def scan(self, root: str) -> Tree:
        """Walk ``root`` and return its tree once every new file is stored."""
        root_stat = os.lstat(root)
        known = self.known.get(root, {})
        entries: list[Entry] = []
        pending: list[tuple[str, Future[StoredFile]]] = []

        for count, (path, item) in enumerate(_walk(root, root_stat.st_dev, self.report)):
            if count % _DEADLINE_CHECK_EVERY == 0:
                self.check_deadline()
            entry = self._entry(root, path, item, known.get(path), pending)
            if entry is not None:
                entries.append(entry)

        entries.extend(self._collect(pending))
        entries.sort(key=lambda entry: entry.path)
        mode = stat.S_IMODE(root_stat.st_mode) & 0o777
        return Tree(root=root, mode=mode, mtime_ns=root_stat.st_mtime_ns, entries=entries)

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SnapshotTimeoutError(
                "Save timed out at its deadline. The previous manifest of this name is "
                "unchanged. Save again with a later deadline.",
            )

    def _entry(
        self,
        root: str,
        path: str,
        item: os.stat_result,
        known: KnownFile | None,
        pending: list[tuple[str, Future[StoredFile]]],
    ) -> Entry | None:
        mode = stat.S_IMODE(item.st_mode) & 0o777
        if stat.S_ISDIR(item.st_mode):
            self.report.dirs += 1
            return Entry(path=path, kind="dir", mode=mode, mtime_ns=item.st_mtime_ns)

        if stat.S_ISLNK(item.st_mode):
            self.report.symlinks += 1
            target = os.readlink(os.path.join(root, path))
            _check_utf8(root, target)
            return Entry(path=path, kind="symlink", mode=mode, mtime_ns=item.st_mtime_ns,
                         target=target)

        unchanged = (
            known is not None
            and known.size == item.st_size
            and known.mtime_ns == item.st_mtime_ns
        )
        if unchanged and known is not None and known.trusted:
            self._count_file(item.st_size, reused=True)
            return Entry(path=path, kind="file", mode=mode, size=item.st_size,
                         mtime_ns=item.st_mtime_ns, sha256=known.sha256)

        source = os.path.join(root, path)
        reuse = known if unchanged else None
        pending.append((path, self.pool.submit(self._store, source, item, reuse)))
        return None

    def _store(self, source: str, item: os.stat_result, reuse: KnownFile | None) -> StoredFile:
        self.check_deadline()
        if reuse is not None and self.objects.exists(reuse.sha256):
            mode = stat.S_IMODE(item.st_mode) & 0o777
            self._count_file(reuse.size, reused=True)
            return StoredFile(reuse.sha256, reuse.size, reuse.mtime_ns, mode, written=False)

        if self._file_delay_s:
            time.sleep(self._file_delay_s)
        stored = self.objects.store_file(source)
        self._count_file(stored.size, reused=False, written=stored.written)
        return stored

    def _collect(self, pending: list[tuple[str, Future[StoredFile]]]) -> list[Entry]:
        entries = []
        try:
            for path, future in pending:
                stored = future.result()
                entries.append(Entry(path=path, kind="file", mode=stored.mode,
                                     size=stored.size, mtime_ns=stored.mtime_ns,
                                     sha256=stored.sha256))
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise
        return entries

    def _count_file(self, size: int, *, reused: bool, written: bool = False) -> None:
        with self._lock:
            self.report.files += 1
            self.report.bytes += size
            if reused:
                self.report.files_reused += 1
                return
            self.report.files_hashed += 1
            self.report.bytes_hashed += size
            if written:
                self.report.objects_written += 1
                self.report.bytes_written += size


def _walk(root: str, device: int, report: SaveReport) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, lstat)`` for every file, symlink and directory under ``root``.

    Symlinks are not followed. Mount points and special files (sockets, FIFOs, devices)
    are skipped and listed in ``report.skipped``.
    """
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        directory = os.path.join(root, relative_dir) if relative_dir else root
        with os.scandir(directory) as scan:
            items = list(scan)

        for item in items:
            path = f"{relative_dir}/{item.name}" if relative_dir else item.name
            _check_utf8(root, path)
            info = item.stat(follow_symlinks=False)
            kind = info.st_mode
            if stat.S_ISDIR(kind) and info.st_dev != device:
                _skip(report, root, path, "mount point")
                continue
            if not (stat.S_ISDIR(kind) or stat.S_ISREG(kind) or stat.S_ISLNK(kind)):
                _skip(report, root, path, "special file")
                continue
            yield path, info
            if stat.S_ISDIR(kind):
                stack.append(path)


def _skip(report: SaveReport, root: str, path: str, reason: str) -> None:
    # Skipped mount points get no entry, so restore neither recreates nor removes them.
    logger.warning("skipped %s %s in %s", reason, path, root)
    report.skipped.append(os.path.join(root, path))


def _check_utf8(root: str, path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        printable = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InvalidSnapshotRequestError(
            f"Name {printable!r} in {root} is not valid UTF-8, which a manifest cannot store. "
            "Rename it and save again.",
            details={"root": root, "path": printable},
        ) from None
