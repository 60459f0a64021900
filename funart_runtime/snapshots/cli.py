"""The ``funart snapshot`` commands.

``add_snapshot_commands`` adds them to the ``funart`` parser. Each handler returns the
exit status and raises ``FunartError`` on failure, which ``funart`` prints as
``funart: <message>`` with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..logs import setup_logging
from ..settings import Settings
from .errors import SnapshotNotFoundError
from .store import SnapshotStore

DEFAULT_GRACE_S = 86400.0


def add_snapshot_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``snapshot`` and its subcommands to the ``funart`` subparsers; return its parser."""
    snapshot = subparsers.add_parser(
        "snapshot", help="save and restore the ComfyUI tree and virtualenv on NAS",
        description="Save and restore environments in a content-addressed store "
                    "(default $FUNART_NAS_ROOT/funart/snapshots).",
    )
    snapshot.set_defaults(command_handler=lambda args: _print_help(snapshot))
    commands = snapshot.add_subparsers(title="snapshot commands")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", type=Path, default=None,
        help="store directory (default $FUNART_NAS_ROOT/funart/snapshots)",
    )

    _add_save_commands(commands, common)
    _add_read_commands(commands, common)
    _add_maintenance_commands(commands, common)
    return snapshot


def _add_save_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    for command, helptext in (
        ("save", "save directories as a snapshot, layered on an optional base"),
        ("base", "save directories as a base manifest (a snapshot without a base)"),
    ):
        parser = commands.add_parser(command, parents=[common], help=helptext)
        parser.add_argument("name", help="snapshot name: letters, digits, '.', '_', '-'")
        parser.add_argument(
            "--path", dest="paths", action="append", required=True, type=Path,
            metavar="DIR", help="directory to save, restored to the same path (repeatable)",
        )
        if command == "save":
            parser.add_argument(
                "--base", default=None, metavar="MANIFEST",
                help="base manifest: a snapshot name in the store or a manifest file path",
            )
        parser.add_argument(
            "--python", type=Path, default=None,
            help="interpreter whose version, packages and torch build are recorded "
                 "(default: none recorded)",
        )
        parser.add_argument(
            "--timeout", type=float, default=None, metavar="SECONDS",
            help="stop the save after this many seconds, keeping the previous manifest",
        )
        parser.set_defaults(command_handler=_save)


def _add_read_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    restore = commands.add_parser("restore", parents=[common],
                                  help="restore each saved path of a snapshot in place")
    restore.add_argument("name", help="snapshot to restore")
    restore.add_argument("--full", action="store_true",
                         help="rewrite every file instead of only those whose stat differs")
    restore.set_defaults(command_handler=_restore)

    listing = commands.add_parser("list", parents=[common], help="list the snapshots")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(command_handler=_list)

    show = commands.add_parser("show", parents=[common], help="print a manifest as JSON")
    show.add_argument("name", help="snapshot to show")
    show.set_defaults(command_handler=_show)

    verify = commands.add_parser("verify", parents=[common],
                                 help="re-hash every object a snapshot needs")
    verify.add_argument("name", help="snapshot to verify")
    verify.set_defaults(command_handler=_verify)


def _add_maintenance_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    copy = commands.add_parser("copy", parents=[common],
                               help="publish a snapshot under another name (manifest only)")
    copy.add_argument("source", help="snapshot to copy")
    copy.add_argument("destination", help="new name; an existing snapshot of it is replaced")
    copy.set_defaults(command_handler=_copy)

    delete = commands.add_parser("delete", parents=[common],
                                 help="delete a snapshot's manifest (gc frees its objects)")
    delete.add_argument("name", help="snapshot to delete")
    delete.set_defaults(command_handler=_delete)

    gc = commands.add_parser("gc", parents=[common],
                             help="remove objects and temporary files that nothing references")
    gc.add_argument(
        "--grace-seconds", type=float, default=DEFAULT_GRACE_S, metavar="N",
        help="keep anything younger than N seconds; set it above the longest save "
             f"(default {DEFAULT_GRACE_S:.0f})",
    )
    gc.set_defaults(command_handler=_gc)


def _open_store(args: argparse.Namespace) -> SnapshotStore:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    if args.store is not None:
        return SnapshotStore(args.store)
    return SnapshotStore.from_settings(settings)


def _save(args: argparse.Namespace) -> int:
    store = _open_store(args)
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    base = getattr(args, "base", None)
    store.save(args.name, args.paths, base=base, python=args.python, deadline=deadline)
    assert store.last_save is not None
    _print_json(store.last_save.as_dict())
    return 0


def _restore(args: argparse.Namespace) -> int:
    report = _open_store(args).restore(args.name, full=args.full)
    _print_json(report.as_dict())
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if not store.root.is_dir():
        raise SnapshotNotFoundError(
            f"No snapshot store at {store.root}. Check --store or FUNART_NAS_ROOT."
        )
    infos = store.list()
    if args.json:
        _print_json([info.as_dict() for info in infos])
        return 0

    for info in infos:
        if info.problem:
            print(f"{info.name}\tunreadable: {info.problem}")
            continue
        print(f"{info.name}\t{info.created_at}\tbase={info.base or '-'}\t"
              f"files={info.files}\tbytes={info.bytes}")
    return 0


def _show(args: argparse.Namespace) -> int:
    manifest = _open_store(args).load(args.name)
    print(manifest.model_dump_json(indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    _print_json(_open_store(args).verify(args.name).as_dict())
    return 0


def _copy(args: argparse.Namespace) -> int:
    started = time.monotonic()
    _open_store(args).copy(args.source, args.destination)
    _print_json({"source": args.source, "destination": args.destination,
                 "seconds": round(time.monotonic() - started, 3)})
    return 0


def _delete(args: argparse.Namespace) -> int:
    _open_store(args).delete(args.name)
    _print_json({"deleted": args.name})
    return 0


def _gc(args: argparse.Namespace) -> int:
    _print_json(_open_store(args).gc(args.grace_seconds).as_dict())
    return 0


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))
