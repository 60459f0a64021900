"""Snapshot saves in other processes: killed mid-way, and two running at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from funart_runtime.snapshots import SnapshotStore
from funart_runtime.snapshots.scan import FILE_DELAY_ENV
from tests.unit.test_snapshot_support import (
    PYTHON,
    count_objects,
    describe_tree,
    make_env,
    write,
)

SAVE = """
import sys
from funart_runtime.snapshots import SnapshotStore
SnapshotStore(sys.argv[1], workers=2).save(sys.argv[2], sys.argv[3:])
"""


def start_save(store: Path, name: str, *roots: Path, delay_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", SAVE, str(store), name, *map(str, roots)],
        env={**os.environ, FILE_DELAY_ENV: str(delay_s)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_killed_save_keeps_previous(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    env = make_env(tmp_path / "env")
    roots = list(env.values())
    before = {name: describe_tree(root) for name, root in env.items()}
    store.save("dev", roots)
    previous = store.manifest_path("dev").read_bytes()
    objects = count_objects(store)
    for index in range(300):
        write(env["comfy"] / "custom_nodes" / "big-node" / f"f{index}.py", f"v = {index}\n")

    process = start_save(store.root, "dev", *roots, delay_s=0.05)
    wait_for(lambda: count_objects(store) >= objects + 10)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert process.returncode == -signal.SIGKILL
    assert store.manifest_path("dev").read_bytes() == previous
    assert count_objects(store) < objects + 300
    for root in roots:
        shutil.rmtree(root)
    store.restore("dev")
    assert {name: describe_tree(root) for name, root in env.items()} == before
    assert store.verify("dev").objects == objects
    report = store.gc(0)
    assert report.objects_removed >= 10
    assert store.verify("dev").objects == objects


def test_concurrent_saves_share_objects(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    first = tmp_path / "first"
    for index in range(150):
        write(first / "shared" / f"f{index}.py", f"shared = {index}\n")
    second = tmp_path / "second"
    shutil.copytree(first, second)
    for index in range(50):
        write(first / "own" / f"a{index}.py", f"first = {index}\n")
        write(second / "own" / f"b{index}.py", f"second = {index}\n")

    processes = [start_save(store.root, "first", first, delay_s=0.005),
                 start_save(store.root, "second", second, delay_s=0.005)]
    results = [process.communicate(timeout=120) for process in processes]

    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
    assert store.verify("first").objects == 200
    assert store.verify("second").objects == 200
    assert count_objects(store) == 250
    assert list(store.temp_dir.iterdir()) == []
    for root, name in ((first, "first"), (second, "second")):
        before = describe_tree(root)
        shutil.rmtree(root)
        store.restore(name)
        assert describe_tree(root) == before
