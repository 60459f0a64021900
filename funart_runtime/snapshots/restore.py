"""Restore a manifest's trees in place, touching only paths that differ from the manifest.

Restore runs in three phases, so that a missing or corrupt object stops it before any
saved path changes:

1. Plan: walk each root (lstat only) and compare it with the manifest. A file whose
   size and mtime_ns match its entry is kept, because restore and save both record
   mtime_ns. A symlink is kept when its target matches.
2. Stage: copy every file to write into a staging directory inside its root, checking
   each object's sha256, then flush the filesystem once.
3. Apply: remove extra paths, create directories, rename staged files into place, then
   set directory modes and mtimes, deepest first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SnapshotCorruptError, UnsafePathError
from .fsutil import fsync_dir, io_error, sync_filesystem
from .manifest import Entry, Tree
from .objects import ObjectStore

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".funart-restore-"
# Pool tasks take up to this many paths or bytes, because one task per small file
# spends more time handing work between threads than copying it.
_BATCH_PATHS = 64
_BATCH_BYTES = 8 * 1024 * 1024
# Restores that write at most this many paths fsync each file and directory. Larger ones
# flush the whole filesystem once, which costs less than thousands of fsyncs but also
# waits for other processes' dirty data.
_FSYNC_EACH_MAX = 256


@dataclass
class RestoreReport:
    """Counters of one restore: what changed on disk and what was left alone."""

    name: str = ""
    files_written: int = 0
    bytes_written: int = 0
    symlinks_written: int = 0
    dirs_created: int = 0
    deleted: int = 0
    unchanged: int = 0
    modes_fixed: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TreePlan:
    """The changes that make one root match its tree."""

    tree: Tree
    create_root: bool = False
    # The root's mtime before restore, put back when staging fails.
    root_mtime_ns: int | None = None
    delete: list[str] = field(default_factory=list)
    make_dirs: list[Entry] = field(default_factory=list)
    write: list[Entry] = field(default_factory=list)
    fix_modes: list[Entry] = field(default_factory=list)
    # Directories ("" is the root) whose mode and mtime are set after the changes.
    touch_dirs: set[str] = field(default_factory=set)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    staging: str = ""
    staged: dict[str, str] = field(default_factory=dict)

    def absolute(self, path: str) -> str:
        return os.path.join(self.tree.root, path) if path else self.tree.root

    def changes(self) -> bool:
        return bool(self.create_root or self.delete or self.make_dirs or self.write
                    or self.fix_modes or self.touch_dirs)


def plan_tree(tree: Tree, *, full: bool) -> TreePlan:
    """Compare a root on disk with its tree; ``full`` rewrites every file and symlink."""
    plan = TreePlan(tree=tree)
    try:
        root_info = os.lstat(tree.root)
    except FileNotFoundError:
        plan.create_root = True
        plan.touch_dirs.add("")
        _plan_missing(plan, set())
        return plan

    if not stat.S_ISDIR(root_info.st_mode):
        raise UnsafePathError(
            f"Restore root {tree.root} exists but is not a directory (it may be a symlink). "
            "Remove it, or move it away, and restore again.",
            details={"root": tree.root},
        )
    plan.root_mtime_ns = root_info.st_mtime_ns
    if _differs(tree.mode, tree.mtime_ns, root_info):
        plan.touch_dirs.add("")

    seen = _plan_walk(plan, root_info.st_dev, full)
    _plan_missing(plan, seen)
    return plan


def _plan_walk(plan: TreePlan, device: int, full: bool) -> set[str]:
    expected = {entry.path: entry for entry in plan.tree.entries}
    seen: set[str] = set()
    stack = [""]
    while stack:
        directory = stack.pop()
        with os.scandir(plan.absolute(directory)) as scan:
            items = list(scan)

        for item in items:
            path = f"{directory}/{item.name}" if directory else item.name
            info = item.stat(follow_symlinks=False)
            entry = expected.get(path)
            if stat.S_ISDIR(info.st_mode) and info.st_dev != device:
                _skip_mount(plan, path, seen)
                continue
            if entry is None:
                plan.delete.append(path)
                plan.touch_dirs.add(directory)
                continue
            seen.add(path)
            if _plan_item(plan, entry, info, full):
                stack.append(path)
    return seen


def _plan_item(plan: TreePlan, entry: Entry, info: os.stat_result, full: bool) -> bool:
    """Plan one path that is both on disk and in the tree; return True to descend into it."""
    on_disk_dir = stat.S_ISDIR(info.st_mode)
    if entry.kind == "dir" and on_disk_dir:
        if _differs(entry.mode, entry.mtime_ns, info):
            plan.touch_dirs.add(entry.path)
        return True

    if entry.kind == "dir" or on_disk_dir:
        # The kind changed. A rename cannot replace a directory, so remove the old path first.
        plan.delete.append(entry.path)
        _plan_create(plan, entry)
        return False

    if not full and _same_content(plan, entry, info):
        plan.unchanged += 1
        if entry.kind == "file" and entry.mode != stat.S_IMODE(info.st_mode) & 0o777:
            plan.fix_modes.append(entry)
        return False

    _plan_create(plan, entry)
    return False


def _plan_missing(plan: TreePlan, seen: set[str]) -> None:
    skipped = tuple(f"{path}/" for path in plan.skipped)
    for entry in plan.tree.entries:
        if entry.path in seen:
            continue
        if skipped and entry.path.startswith(skipped):
            logger.warning("not restoring %s: it is under a mount point",
                           plan.absolute(entry.path))
            continue
        _plan_create(plan, entry)


def _plan_create(plan: TreePlan, entry: Entry) -> None:
    if entry.kind == "dir":
        plan.make_dirs.append(entry)
        plan.touch_dirs.add(entry.path)
    else:
        plan.write.append(entry)
    plan.touch_dirs.add(entry.path.rpartition("/")[0])


def _skip_mount(plan: TreePlan, path: str, seen: set[str]) -> None:
    # NOTE: a mount point inside a root is neither removed nor descended into, even when
    # the tree lacks it, because its contents belong to another filesystem (often NAS).
    logger.warning("left mount point %s alone", plan.absolute(path))
    plan.skipped.append(path)
    seen.add(path)


def _same_content(plan: TreePlan, entry: Entry, info: os.stat_result) -> bool:
    if entry.kind == "file":
        return (
            stat.S_ISREG(info.st_mode)
            and info.st_size == entry.size
            and info.st_mtime_ns == entry.mtime_ns
        )
    return stat.S_ISLNK(info.st_mode) and os.readlink(plan.absolute(entry.path)) == entry.target


def _differs(mode: int, mtime_ns: int, info: os.stat_result) -> bool:
    return stat.S_IMODE(info.st_mode) & 0o777 != mode or info.st_mtime_ns != mtime_ns


class TreeRestorer:
    """Stage and apply the plans of one manifest with a pool of threads."""

    def __init__(self, objects: ObjectStore, pool: ThreadPoolExecutor,
                 report: RestoreReport) -> None:
        self.objects = objects
        self.pool = pool
        self.report = report
        self._lock = threading.Lock()
        self._fsync_each = False

    def stage(self, plans: list[TreePlan]) -> None:
        """Copy every file and symlink to write into its root's staging directory.

        Raises SnapshotCorruptError naming the object and the path it was for. On failure
        the staging directories are removed, roots get their mtimes back and roots that
        staging created are removed, so no saved path has changed.
        """
        self._fsync_each = sum(len(plan.write) for plan in plans) <= _FSYNC_EACH_MAX
        try:
            for plan in plans:
                self._stage_tree(plan)
        except BaseException:
            for plan in plans:
                remove_staging(plan, undo=True)
            raise

        if not self._fsync_each:
            for root in {plan.tree.root for plan in plans if plan.staged}:
                sync_filesystem(root)

    def apply(self, plans: list[TreePlan]) -> None:
        """Make each root match its tree using the staged files."""
        for plan in plans:
            self._run(self._delete, plan, plan.delete)
            self._make_dirs(plan)
            self._run(self._move_into_place, plan, list(plan.staged.items()))
            remove_staging(plan)
            self._fix_modes(plan)
            self._touch_dirs(plan)
            self.report.unchanged += plan.unchanged
            self.report.skipped.extend(plan.absolute(path) for path in plan.skipped)

        self._flush_changes(plans)

    def _flush_changes(self, plans: list[TreePlan]) -> None:
        """Make the renames, removals and new directories durable."""
        if not self._fsync_each:
            for root in {plan.tree.root for plan in plans if plan.changes()}:
                sync_filesystem(root)
            return

        for plan in plans:
            for path in plan.touch_dirs:
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(plan.absolute(path))

    def _stage_tree(self, plan: TreePlan) -> None:
        if plan.create_root:
            _call("create directory", plan.tree.root, os.makedirs, plan.tree.root, exist_ok=True)
        if not plan.write:
            return

        plan.staging = plan.absolute(f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        _call("create directory", plan.staging, os.mkdir, plan.staging, 0o700)
        plan.touch_dirs.add("")
        staged = [(entry, os.path.join(plan.staging, str(index)))
                  for index, entry in enumerate(plan.write)]
        self._run(self._stage_entry, plan, staged, sizes=[entry.size for entry in plan.write])
        plan.staged = {entry.path: temp for entry, temp in staged}

    def _stage_entry(self, plan: TreePlan, item: tuple[Entry, str]) -> None:
        entry, temp = item
        if entry.kind == "symlink":
            assert entry.target is not None
            _call("create symlink", temp, os.symlink, entry.target, temp)
            _call("set the mtime", temp, os.utime, temp, ns=(entry.mtime_ns, entry.mtime_ns),
                  follow_symlinks=False)
            self._count(symlinks_written=1)
            return

        assert entry.sha256 is not None
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self.objects.copy_verified(entry.sha256, entry.size, fd)
            os.fchmod(fd, entry.mode)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            if self._fsync_each:
                os.fsync(fd)
        except SnapshotCorruptError as exc:
            raise _for_path(exc, plan.absolute(entry.path)) from None
        except OSError as exc:
            raise io_error("write staged file", temp, exc) from None
        finally:
            os.close(fd)
        self._count(files_written=1, bytes_written=entry.size)

    def _delete(self, plan: TreePlan, path: str) -> None:
        target = plan.absolute(path)
        try:
            if stat.S_ISDIR(os.lstat(target).st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise io_error("remove", target, exc) from None
        self._count(deleted=1)

    def _make_dirs(self, plan: TreePlan) -> None:
        for entry in sorted(plan.make_dirs, key=lambda entry: entry.path):
            target = plan.absolute(entry.path)
            _call("create directory", target, os.mkdir, target, 0o700)
        self.report.dirs_created += len(plan.make_dirs)

    def _move_into_place(self, plan: TreePlan, item: tuple[str, str]) -> None:
        path, temp = item
        target = plan.absolute(path)
        _call("move into place", target, os.rename, temp, target)

    def _fix_modes(self, plan: TreePlan) -> None:
        for entry in plan.fix_modes:
            target = plan.absolute(entry.path)
            _call("set the mode", target, os.chmod, target, entry.mode)
        self.report.modes_fixed += len(plan.fix_modes)

    def _touch_dirs(self, plan: TreePlan) -> None:
        dirs = {entry.path: entry for entry in plan.tree.entries if entry.kind == "dir"}
        for path in sorted(plan.touch_dirs, key=lambda path: path.count("/") + bool(path),
                           reverse=True):
            entry = dirs.get(path)
            if path and entry is None:
                continue
            mode = entry.mode if entry else plan.tree.mode
            mtime_ns = entry.mtime_ns if entry else plan.tree.mtime_ns
            target = plan.absolute(path)
            _call("set the mode", target, os.chmod, target, mode)
            _call("set the mtime", target, os.utime, target, ns=(mtime_ns, mtime_ns))

    def _run(self, action: Callable[[TreePlan, Any], None], plan: TreePlan,
             items: list[Any], sizes: list[int] | None = None) -> None:
        """Run ``action`` on every item in batches in the pool; re-raise the first failure."""
        futures = [self.pool.submit(_run_batch, action, plan, batch)
                   for batch in _batches(items, sizes)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self.report, name, getattr(self.report, name) + value)


def _batches(items: list[Any], sizes: list[int] | None) -> Iterator[list[Any]]:
    batch: list[Any] = []
    batch_bytes = 0
    for index, item in enumerate(items):
        batch.append(item)
        batch_bytes += sizes[index] if sizes else 0
        if len(batch) >= _BATCH_PATHS or batch_bytes >= _BATCH_BYTES:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


def _run_batch(action: Callable[[TreePlan, Any], None], plan: TreePlan,
               batch: list[Any]) -> None:
    for item in batch:
        action(plan, item)


def remove_staging(plan: TreePlan, *, undo: bool = False) -> None:
    """Remove a plan's staging directory and anything left in it.

    ``undo`` also puts back the root's mtime, or removes the root if staging created it.
    """
    if plan.staging:
        shutil.rmtree(plan.staging, ignore_errors=True)
        plan.staging = ""
    if not undo:
        return

    with contextlib.suppress(OSError):
        if plan.create_root:
            os.rmdir(plan.tree.root)
        elif plan.root_mtime_ns is not None:
            os.utime(plan.tree.root, ns=(plan.root_mtime_ns, plan.root_mtime_ns))


def _call(action: str, path: str, function: Callable[..., Any], *args: Any,
          **kwargs: Any) -> None:
    """Call ``function(*args, **kwargs)``; an OSError becomes an error that names ``path``."""
    try:
        function(*args, **kwargs)
    except OSError as exc:
        raise io_error(action, path, exc) from None


def _for_path(exc: SnapshotCorruptError, path: str) -> SnapshotCorruptError:
    return SnapshotCorruptError(
        f"Cannot restore {path}: {exc.message}. Nothing was changed; run "
        "`funart snapshot verify` to list every bad object, and save the snapshot again.",
        details={**exc.details, "path": path},
    )
