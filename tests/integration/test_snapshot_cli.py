"""The snapshot commands run as a user runs them, each in its own process.

``funart snapshot`` may not be registered in ``funart`` yet, so a small wrapper builds the
parser with ``add_snapshot_commands`` and handles errors as ``funart`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_snapshot_support import describe_tree, make_env, write

WRAPPER = """
import argparse, sys
from funart_runtime.errors import FunartError
from funart_runtime.snapshots.cli import add_snapshot_commands

parser = argparse.ArgumentParser(prog="funart")
add_snapshot_commands(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(int(args.command_handler(args)))
except FunartError as exc:
    print(f"funart: {exc.message}", file=sys.stderr)
    sys.exit(1)
"""


class SnapshotCli:
    def __init__(self, store: Path, nas_root: Path) -> None:
        self.store = store
        self.env = {**os.environ, "FUNART_NAS_ROOT": str(nas_root), "FUNART_LOG_LEVEL": "INFO"}

    def run(self, *args: str, store: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", WRAPPER, "snapshot", *args]
        if store:
            command += ["--store", str(self.store)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env=self.env)

    def json(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture()
def cli(tmp_path: Path) -> SnapshotCli:
    return SnapshotCli(tmp_path / "store", tmp_path / "nas")


def test_cli_full_cycle(cli: SnapshotCli, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env")
    paths = [arg for root in env.values() for arg in ("--path", str(root))]
    base = cli.json("base", "base", *paths)
    write(env["comfy"] / "custom_nodes" / "new-node" / "__init__.py", "new = 1\n")
    before = {name: describe_tree(root) for name, root in env.items()}

    saved = cli.json("save", "dev-1", *paths, "--base", "base", "--python", sys.executable)
    listed = cli.json("list", "--json")
    manifest = cli.json("show", "dev-1")
    copied = cli.json("copy", "dev-1", "prod")
    verified = cli.json("verify", "prod")
    for root in env.values():
        shutil.rmtree(root)
    restored = cli.json("restore", "prod")
    deleted = cli.json("delete", "dev-1")
    collected = cli.json("gc", "--grace-seconds", "0")

    assert base["objects_written"] == base["files_hashed"]
    assert saved["files_hashed"] == 1
    assert [item["name"] for item in listed] == ["base", "dev-1"]
    assert manifest["base"] == "base"
    assert manifest["environment"]["python_version"]
    assert manifest["environment"]["comfyui"]["version"] == "0.3.75"
    assert copied["seconds"] < 1
    assert verified["objects"] > 0
    assert restored["files_written"] == saved["files"]
    assert {name: describe_tree(root) for name, root in env.items()} == before
    assert deleted == {"deleted": "dev-1"}
    assert collected["manifests"] == 2
    assert collected["objects_removed"] == 0


def test_cli_table_and_default_store(cli: SnapshotCli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree / "a.txt", "a")

    saved = cli.run("save", "dev", "--path", str(tree), store=False)
    listed = cli.run("list", store=False)

    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "nas" / "funart" / "snapshots" / "manifests" / "dev.json").is_file()
    assert listed.stdout.startswith("dev\t")
    assert "files=1" in listed.stdout


def test_cli_failures_exit_one(cli: SnapshotCli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree / "a.txt", "a")
    cli.json("save", "dev", "--path", str(tree))
    manifest = json.loads((cli.store / "manifests" / "dev.json").read_text())
    sha256 = manifest["trees"][0]["entries"][0]["sha256"]
    (cli.store / "objects" / sha256[:2] / sha256[2:]).unlink()

    missing = cli.run("restore", "nope")
    corrupt = cli.run("verify", "dev")
    bad_path = cli.run("save", "dev", "--path", str(tmp_path / "absent"))

    for result in (missing, corrupt, bad_path):
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1].startswith("funart: ")
    assert "'nope' not found" in missing.stderr
    assert sha256[2:] in corrupt.stderr
    assert str(tmp_path / "absent") in bad_path.stderr


def test_cli_snapshot_without_command(cli: SnapshotCli) -> None:
    result = cli.run(store=False)

    assert result.returncode == 2
    assert "snapshot commands" in result.stderr


def test_cli_list_missing_store(cli: SnapshotCli) -> None:
    result = cli.run("list")

    assert result.returncode == 1
    assert f"No snapshot store at {cli.store}" in result.stderr
