"""The snapshot store: content-addressed objects plus one manifest per snapshot name.

Layout under the store root::

    objects/ab/cdef...   read-only file contents, named by sha256
    manifests/NAME.json  one manifest per snapshot, replaced atomically
    tmp/                 partial writes; ``gc`` removes those older than its grace period

A save writes and fsyncs its new objects before it renames the manifest into place, so
a killed save leaves the previous manifest of that name and every object it needs.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..settings import Settings
from .errors import (
    InvalidSnapshotRequestError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotNotFoundError,
    UnsafePathError,
)
from .facts import collect_environment
from .fsutil import atomic_write_bytes, fsync_dir, io_error
from .manifest import (
    FORMAT_VERSION,
    Environment,
    Manifest,
    Tree,
    check_manifest_paths,
    dump_manifest,
    find_overlap,
    manifest_summary,
    parse_manifest,
)
from .objects import ObjectStore
from .restore import RestoreReport, TreePlan, TreeRestorer, plan_tree, remove_staging
from .scan import KnownFile, SaveReport, TreeScanner

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OBJECT_NAME = re.compile(r"^[0-9a-f]{62}$")
DEFAULT_WORKERS = 8


@dataclass
class VerifyReport:
    name: str
    objects: int
    bytes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    manifests: int = 0
    objects_kept: int = 0
    objects_removed: int = 0
    bytes_removed: int = 0
    temp_removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SnapshotInfo:
    """One line of ``list``: a manifest's summary, or the problem that stopped reading it."""

    name: str
    created_at: str | None = None
    base: str | None = None
    files: int = 0
    symlinks: int = 0
    dirs: int = 0
    bytes: int = 0
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Base:
    manifest: Manifest | None = None
    reference: str | None = None
    sha256: str | None = None
    trusted: bool = True
    known: dict[str, dict[str, KnownFile]] = field(default_factory=dict)


class SnapshotStore:
    """Save, restore, publish and clean up snapshots in one store directory."""

    def __init__(self, root: Path | str, *, workers: int = DEFAULT_WORKERS) -> None:
        self.root = Path(os.path.abspath(root))
        self.manifests_dir = self.root / "manifests"
        self.temp_dir = self.root / "tmp"
        self.objects = ObjectStore(self.root / "objects", self.temp_dir)
        self.workers = workers
        self.last_save: SaveReport | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SnapshotStore:
        """Open the default store, ``$FUNART_NAS_ROOT/funart/snapshots``."""
        return cls(settings.nas_root / "funart" / "snapshots")

    def save(
        self,
        name: str,
        paths: Sequence[Path | str],
        base: str | None = None,
        python: Path | str | None = None,
        deadline: float | None = None,
    ) -> Manifest:
        """Save ``paths`` as snapshot ``name`` and return its manifest.

        Files whose size and mtime_ns match the previous manifest of ``name`` or the
        ``base`` manifest (a name in this store or a manifest file path) are not read.
        ``python`` is the interpreter whose facts are recorded (None skips them), and
        ``deadline`` is a ``time.monotonic()`` value after which the save raises
        SnapshotTimeoutError and leaves the previous manifest in place. Counters of
        the save are in ``last_save``.
        """
        started = time.monotonic()
        check_name(name)
        roots = self._resolve_roots(paths)
        with self._os_errors(f"save snapshot {name!r}"):
            self._make_layout()
            base_info = self._load_base(base)
            known = self._known_files(name, base_info)
            report = SaveReport(name=name)
            interpreter = str(python) if python is not None else None
            trees, environment = self._scan(roots, known, report, interpreter, deadline)

            manifest = Manifest(
                name=name, created_at=datetime.now(timezone.utc), base=base_info.reference,
                base_sha256=base_info.sha256, trees=trees, environment=environment,
            )
            check_manifest_paths(manifest, name)
            self._write_manifest(manifest)

        report.seconds = round(time.monotonic() - started, 3)
        self.last_save = report
        logger.info("saved snapshot %s: %s", name, report.as_dict())
        return manifest

    def restore(self, name: str, *, full: bool = False) -> RestoreReport:
        """Make every saved path of ``name`` hold exactly the snapshot's content.

        Only paths that differ are written or removed unless ``full`` is set, which
        rewrites every file. Every object read is checked against its sha256 before any
        saved path changes.
        """
        started = time.monotonic()
        manifest = self.load(name)
        self._check_roots_outside_store([tree.root for tree in manifest.trees])
        report = RestoreReport(name=name)
        with self._os_errors(f"restore snapshot {name!r}"):
            plans = [plan_tree(tree, full=full) for tree in manifest.trees]
            self._apply(plans, report)

        report.seconds = round(time.monotonic() - started, 3)
        logger.info("restored snapshot %s: %s", name, report.as_dict())
        return report

    def load(self, name: str) -> Manifest:
        """Read and check the manifest of ``name``."""
        return parse_manifest(self._read_manifest(name), str(self.manifest_path(name)))

    def list(self) -> builtins.list[SnapshotInfo]:
        """Summarize every manifest, sorted by name; an unreadable one names its problem."""
        infos = []
        for name in self._names():
            try:
                summary = manifest_summary(self.load(name))
            except SnapshotError as exc:
                infos.append(SnapshotInfo(name=name, problem=exc.message))
                continue
            infos.append(SnapshotInfo(**summary))
        return infos

    def latest(self, prefix: str = "") -> str | None:
        """Return the name starting with ``prefix`` whose manifest was written last."""
        newest: tuple[int, str] | None = None
        for name in self._names():
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):
                candidate = (self.manifest_path(name).stat().st_mtime_ns, name)
                newest = candidate if newest is None else max(newest, candidate)
        return newest[1] if newest else None

    def copy(self, source: str, destination: str) -> None:
        """Publish ``source`` as ``destination`` by writing one manifest; no object is copied.

        The copy parses JSON without the schema check, so its cost is one manifest read
        and write whatever the snapshot's size. Restore checks the copy as usual.
        """
        check_name(destination)
        if source == destination:
            raise InvalidSnapshotRequestError(
                f"Cannot copy snapshot {source!r} onto itself. Choose another destination name."
            )
        data = self._read_manifest(source)
        document = _decode_manifest(data, str(self.manifest_path(source)))
        document["name"] = destination
        document["copied_from"] = source
        # A copy is published now; the source's time stays in the source manifest.
        document["created_at"] = datetime.now(timezone.utc).isoformat()

        encoded = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        with self._os_errors(f"copy snapshot {source!r} to {destination!r}"):
            self._make_layout()
            atomic_write_bytes(self.manifest_path(destination), encoded, self.temp_dir)
        logger.info("copied snapshot %s to %s", source, destination)

    def verify(self, name: str) -> VerifyReport:
        """Re-hash every object ``name`` needs; raise SnapshotCorruptError listing bad ones."""
        started = time.monotonic()
        objects = sorted(self.load(name).objects())
        with ThreadPoolExecutor(self.workers, thread_name_prefix="snapshot-verify") as pool:
            results = list(pool.map(self._check_object, objects))

        problems = [result for result in results if isinstance(result, SnapshotCorruptError)]
        if problems:
            raise SnapshotCorruptError(
                f"Snapshot {name!r} has {len(problems)} bad object(s) of {len(objects)}. "
                f"First: {problems[0].message}. Save the snapshot again to rewrite them.",
                details={"name": name, "objects": [problem.details for problem in problems]},
            )
        size = sum(result for result in results if isinstance(result, int))
        report = VerifyReport(name, len(objects), size, round(time.monotonic() - started, 3))
        logger.info("verified snapshot %s: %s", name, report.as_dict())
        return report

    def delete(self, name: str) -> None:
        """Remove the manifest of ``name``; ``gc`` later removes objects nothing else needs."""
        check_name(name)
        try:
            self.manifest_path(name).unlink()
        except FileNotFoundError:
            raise self._not_found(name) from None
        except OSError as exc:
            raise self._wrap_os_error(f"delete snapshot {name!r}", exc) from None
        fsync_dir(self.manifests_dir)
        logger.info("deleted snapshot %s", name)

    def gc(self, grace_s: float) -> GcReport:
        """Remove objects no manifest references and temporary files, if older than ``grace_s``.

        The grace period protects a save in progress: its new objects are not yet in any
        manifest, and objects it found already present had their mtime refreshed.
        Every manifest must parse, because an unreadable one could reference anything.
        """
        started = time.monotonic()
        report = GcReport()
        with self._os_errors("collect garbage"):
            referenced = self._mark(report)
            cutoff_ns = time.time_ns() - int(grace_s * 1e9)
            self._sweep_objects(referenced, cutoff_ns, report)
            self._sweep_temp(cutoff_ns, report)

        report.seconds = round(time.monotonic() - started, 3)
        logger.info("collected garbage in %s: %s", self.root, report.as_dict())
        return report

    def manifest_path(self, name: str) -> Path:
        return self.manifests_dir / f"{name}.json"

    def _scan(
        self,
        roots: builtins.list[str],
        known: dict[str, dict[str, KnownFile]],
        report: SaveReport,
        python: str | None,
        deadline: float | None,
    ) -> tuple[builtins.list[Tree], Environment]:
        """Walk and store the trees while the environment facts run in the background."""
        facts_pool = ThreadPoolExecutor(1, thread_name_prefix="snapshot-facts")
        facts = facts_pool.submit(collect_environment, python, roots, deadline)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="snapshot-save")
        try:
            scanner = TreeScanner(self.objects, known, pool, deadline, report)
            trees = [scanner.scan(root) for root in roots]
            self.objects.flush_shards()
            environment = facts.result()
            scanner.check_deadline()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # A facts command still running ends within its own timeout; don't wait for it.
            facts_pool.shutdown(wait=False, cancel_futures=True)
        return trees, environment

    def _apply(self, plans: builtins.list[TreePlan], report: RestoreReport) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="snapshot-restore") as pool:
            restorer = TreeRestorer(self.objects, pool, report)
            restorer.stage(plans)
            try:
                restorer.apply(plans)
            finally:
                for plan in plans:
                    remove_staging(plan)

    def _resolve_roots(self, paths: Sequence[Path | str]) -> builtins.list[str]:
        if isinstance(paths, (str, os.PathLike)):
            # One path given bare, not in a list: iterating a str would yield its letters.
            paths = [paths]
        if not paths:
            raise InvalidSnapshotRequestError("No path to save. Pass at least one --path DIR.")
        roots = []
        for path in paths:
            root = os.path.realpath(path)
            if not os.path.isdir(root):
                raise InvalidSnapshotRequestError(
                    f"Path {path} is not a directory. Pass an existing directory to save.",
                    details={"path": str(path)},
                )
            if root == "/":
                raise InvalidSnapshotRequestError(
                    "Cannot save /, because restoring it would replace the whole system. "
                    "Pass the ComfyUI and virtualenv directories instead."
                )
            roots.append(root)

        overlap = find_overlap(roots)
        if overlap is not None:
            raise InvalidSnapshotRequestError(
                f"Path {overlap[1]} overlaps {overlap[0]}. Pass paths that do not contain "
                "one another.",
                details={"paths": list(overlap)},
            )
        self._check_roots_outside_store(roots)
        return roots

    def _check_roots_outside_store(self, roots: builtins.list[str]) -> None:
        store = os.path.realpath(self.root)
        overlap = find_overlap([store, *roots])
        if overlap is not None:
            raise UnsafePathError(
                f"Saved path {overlap[1] if overlap[0] == store else overlap[0]} and the "
                f"store {store} contain one another, so a restore would delete the store or "
                "a save would read it. Use a store outside the saved paths.",
                details={"store": store, "paths": roots},
            )

    def _load_base(self, base: str | None) -> _Base:
        if base is None:
            return _Base()

        if "/" in base or base.endswith(".json"):
            path = Path(base).absolute()
            data = _read_file(path, f"base manifest {path}")
            manifest = parse_manifest(data, str(path))
            in_store = path.resolve().parent == self.manifests_dir.resolve()
            reference, trusted = str(path), in_store
        else:
            data = self._read_manifest(base)
            manifest = parse_manifest(data, str(self.manifest_path(base)))
            reference, trusted = base, True

        known = _known_from(manifest, trusted)
        return _Base(manifest, reference, hashlib.sha256(data).hexdigest(), trusted, known)

    def _known_files(self, name: str, base: _Base) -> dict[str, dict[str, KnownFile]]:
        """Index the base's files, then the previous manifest's, by root and path.

        NOTE: an object is trusted to exist because a manifest references it. That manifest
        can be deleted and ``gc`` run while this save is running. The new manifest then
        references an object that is gone, which ``verify`` reports.
        """
        known = {root: dict(files) for root, files in base.known.items()}
        previous = self._load_previous(name)
        if previous is not None:
            for root, files in _known_from(previous, trusted=True).items():
                known.setdefault(root, {}).update(files)
        return known

    def _load_previous(self, name: str) -> Manifest | None:
        try:
            return self.load(name)
        except SnapshotNotFoundError:
            return None
        except SnapshotError as exc:
            logger.warning("ignoring the previous manifest of %s, so every file is read: %s",
                           name, exc.message)
            return None

    def _write_manifest(self, manifest: Manifest) -> None:
        atomic_write_bytes(self.manifest_path(manifest.name), dump_manifest(manifest),
                           self.temp_dir)

    def _read_manifest(self, name: str) -> bytes:
        check_name(name)
        path = self.manifest_path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise self._not_found(name) from None
        except OSError as exc:
            raise self._wrap_os_error(f"read snapshot {name!r}", exc) from None

    def _names(self) -> builtins.list[str]:
        try:
            paths = sorted(self.manifests_dir.glob("*.json"))
        except OSError as exc:
            raise self._wrap_os_error("list", exc) from None
        return [path.stem for path in paths if NAME_PATTERN.match(path.stem)]

    def _check_object(self, sha256: str) -> int | SnapshotCorruptError:
        try:
            return self.objects.hash_object(sha256)
        except SnapshotCorruptError as exc:
            return exc

    def _mark(self, report: GcReport) -> set[str]:
        referenced: set[str] = set()
        for name in self._names():
            try:
                manifest = self.load(name)
            except SnapshotNotFoundError:
                continue
            except SnapshotError as exc:
                raise SnapshotCorruptError(
                    f"Garbage collection stopped before removing anything: {exc.message} "
                    "Fix or delete that manifest and run gc again.",
                    details=exc.details,
                ) from None
            referenced |= manifest.objects()
            report.manifests += 1
        return referenced

    def _sweep_objects(self, referenced: set[str], cutoff_ns: int, report: GcReport) -> None:
        if not self.objects.objects_dir.is_dir():
            return
        for shard in sorted(self.objects.objects_dir.iterdir()):
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for path in shard.iterdir():
                sha256 = shard.name + path.name
                if not _OBJECT_NAME.match(path.name) or sha256 in referenced:
                    report.objects_kept += 1
                    continue
                info = path.lstat()
                if info.st_mtime_ns > cutoff_ns:
                    report.objects_kept += 1
                    continue
                _remove(path)
                report.objects_removed += 1
                report.bytes_removed += info.st_size

    def _sweep_temp(self, cutoff_ns: int, report: GcReport) -> None:
        if not self.temp_dir.is_dir():
            return
        for path in self.temp_dir.iterdir():
            if path.lstat().st_mtime_ns <= cutoff_ns:
                _remove(path)
                report.temp_removed += 1

    def _make_layout(self) -> None:
        for directory in (self.objects.objects_dir, self.manifests_dir, self.temp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def _not_found(self, name: str) -> SnapshotNotFoundError:
        return SnapshotNotFoundError(
            f"Snapshot {name!r} not found in store {self.root}. Run `funart snapshot list` "
            "to see the saved names.",
            details={"name": name, "store": str(self.root)},
        )

    @contextlib.contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise self._wrap_os_error(action, exc) from None

    def _wrap_os_error(self, action: str, exc: OSError) -> SnapshotError:
        return io_error(action, exc.filename if exc.filename is not None else self.root, exc)


def check_name(name: str) -> None:
    """Raise InvalidSnapshotRequestError unless ``name`` is a valid snapshot name."""
    if not NAME_PATTERN.match(name):
        raise InvalidSnapshotRequestError(
            f"Invalid snapshot name {name!r}. Use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            details={"name": name},
        )


def _known_from(manifest: Manifest, trusted: bool) -> dict[str, dict[str, KnownFile]]:
    known: dict[str, dict[str, KnownFile]] = {}
    for tree in manifest.trees:
        files = known.setdefault(tree.root, {})
        for entry in tree.entries:
            if entry.kind == "file" and entry.sha256 is not None:
                files[entry.path] = KnownFile(entry.size, entry.mtime_ns, entry.sha256, trusted)
    return known


def _decode_manifest(data: bytes, source: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotCorruptError(f"Manifest {source} is invalid: not JSON ({exc}).",
                                   details={"manifest": source}) from None
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"Manifest {source} is invalid: format_version is not {FORMAT_VERSION}.",
            details={"manifest": source},
        )
    return document


def _read_file(path: Path, description: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SnapshotNotFoundError(
            f"The {description} does not exist. Pass an existing file.",
            details={"path": str(path)},
        ) from None
    except OSError as exc:
        raise io_error(f"read the {description}", path, exc) from None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
