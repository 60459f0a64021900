"""Content-addressed objects: one read-only file per sha256, under ``objects/ab/cdef...``.

Objects are immutable. Two processes that write the same content rename identical
files onto the same name, so concurrent saves cannot corrupt one another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import SnapshotCorruptError, SnapshotError
from .fsutil import fsync_dir, temp_name

# Reads go into one reused buffer per thread. A fresh 1 MiB bytes object per read costs
# page faults and zeroing in the kernel, which made a read-hash-write loop 3x slower on
# a 2-core VM (Linux 6.18, ext4).
CHUNK = 1024 * 1024
# Files up to this size are read into the buffer at once, so an object that already
# exists costs no temporary file.
SMALL_FILE = CHUNK
_READ_ATTEMPTS = 3
_MISMATCH = "corrupt: its content does not match its sha256"


@dataclass(frozen=True)
class StoredFile:
    """Result of storing one file: its content hash and the stat it was read under."""

    sha256: str
    size: int
    mtime_ns: int
    mode: int
    written: bool


class ObjectStore:
    """The ``objects/`` directory of a snapshot store, with ``tmp/`` for partial writes."""

    def __init__(self, objects_dir: Path, temp_dir: Path) -> None:
        self.objects_dir = objects_dir
        self.temp_dir = temp_dir
        self._shards_made: set[str] = set()
        self._shards_written: set[str] = set()
        self._new_shards = False
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def store_file(self, source: str) -> StoredFile:
        """Hash ``source`` and write it as an object unless that object exists.

        The file is read again when its size or mtime changes during the read. An existing
        object gets its mtime refreshed, so that a concurrent ``gc`` counts it as young.
        """
        for _ in range(_READ_ATTEMPTS):
            stored = self._try_store(source)
            if stored is not None:
                return stored
        raise SnapshotError(
            f"File {source} changed while it was being saved, {_READ_ATTEMPTS} times. "
            "Stop the process that writes it and save again.",
            details={"path": source},
        )

    def flush_shards(self) -> None:
        """Fsync every shard directory that received an object since the last flush."""
        with self._lock:
            shards = sorted(self._shards_written)
            self._shards_written.clear()
            new_shards, self._new_shards = self._new_shards, False
        for shard in shards:
            fsync_dir(self.objects_dir / shard)
        if new_shards:
            fsync_dir(self.objects_dir)

    def copy_verified(self, sha256: str, size: int, destination_fd: int) -> None:
        """Copy the first ``size`` bytes of an object into an open file, checking its sha256.

        Raises SnapshotCorruptError naming the object when it is missing, shorter than
        ``size`` or its content does not hash to its name. Bytes past ``size`` are not
        read, because the copy is right without them; ``verify`` reports them.
        """
        path = self.path(sha256)
        try:
            source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self.corrupt(sha256, "missing") from None

        digest = hashlib.sha256()
        buffer = _buffer()
        copied = 0
        try:
            while copied < size:
                count = os.readv(source, [buffer[:min(CHUNK, size - copied)]])
                if count == 0:
                    break
                digest.update(buffer[:count])
                _write_all(destination_fd, buffer[:count])
                copied += count
        finally:
            os.close(source)

        if copied != size or digest.hexdigest() != sha256:
            raise self.corrupt(sha256, _MISMATCH)

    def hash_object(self, sha256: str) -> int:
        """Re-hash one object; return its size or raise SnapshotCorruptError."""
        try:
            source = os.open(self.path(sha256), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self.corrupt(sha256, "missing") from None

        digest = hashlib.sha256()
        buffer = _buffer()
        size = 0
        try:
            while count := os.readv(source, [buffer]):
                digest.update(buffer[:count])
                size += count
        finally:
            os.close(source)

        if digest.hexdigest() != sha256:
            raise self.corrupt(sha256, _MISMATCH)
        return size

    def corrupt(self, sha256: str, reason: str) -> SnapshotCorruptError:
        """Build the error for an object that is ``missing`` or ``corrupt``."""
        path = self.path(sha256)
        return SnapshotCorruptError(
            f"Object {path} is {reason}",
            details={"object": str(path), "sha256": sha256, "reason": reason},
        )

    def _try_store(self, source: str) -> StoredFile | None:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            before = os.fstat(fd)
            if before.st_size <= SMALL_FILE:
                result = self._store_small(fd)
            else:
                result = self._store_large(fd)
            after = os.fstat(fd)
        finally:
            os.close(fd)

        unchanged = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        if result is None or not unchanged:
            return None
        sha256, written = result
        mode = stat.S_IMODE(before.st_mode) & 0o777
        return StoredFile(sha256, before.st_size, before.st_mtime_ns, mode, written)

    def _store_small(self, fd: int) -> tuple[str, bool] | None:
        """Store a file that fits the buffer; return None if it grew past it."""
        buffer = _buffer()
        size = 0
        while count := os.readv(fd, [buffer[size:]]):
            size += count
            if size == len(buffer) and os.readv(fd, [bytearray(1)]):
                return None
        data = buffer[:size]

        sha256 = hashlib.sha256(data).hexdigest()
        if self._refresh_existing(sha256):
            return sha256, False

        temp = temp_name(self.temp_dir, "object")
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            _write_all(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        self._publish(temp, sha256)
        return sha256, True

    def _store_large(self, fd: int) -> tuple[str, bool]:
        temp = temp_name(self.temp_dir, "object")
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        digest = hashlib.sha256()
        buffer = _buffer()
        try:
            while count := os.readv(fd, [buffer]):
                digest.update(buffer[:count])
                _write_all(out, buffer[:count])
            os.fsync(out)
        except BaseException:
            os.close(out)
            _unlink_quietly(temp)
            raise
        os.close(out)

        sha256 = digest.hexdigest()
        if self._refresh_existing(sha256):
            _unlink_quietly(temp)
            return sha256, False
        self._publish(temp, sha256)
        return sha256, True

    def _refresh_existing(self, sha256: str) -> bool:
        try:
            os.utime(self.path(sha256))
        except FileNotFoundError:
            return False
        return True

    def _publish(self, temp: Path, sha256: str) -> None:
        shard = sha256[:2]
        if shard not in self._shards_made:
            with contextlib.suppress(FileExistsError):
                (self.objects_dir / shard).mkdir()
                self._new_shards = True
            with self._lock:
                self._shards_made.add(shard)

        try:
            os.rename(temp, self.path(sha256))
        except BaseException:
            _unlink_quietly(temp)
            raise
        with self._lock:
            self._shards_written.add(shard)


_thread_buffers = threading.local()


def _buffer() -> memoryview:
    """Return this thread's read buffer of CHUNK bytes."""
    view: memoryview | None = getattr(_thread_buffers, "view", None)
    if view is None:
        view = memoryview(bytearray(CHUNK))
        _thread_buffers.view = view
    return view


def _write_all(fd: int, data: bytes | memoryview) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    with memoryview(data) as view:
        while written < len(view):
            written += os.write(fd, view[written:])


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
