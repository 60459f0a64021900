"""Snapshot store against tar and cp -a on a synthetic ComfyUI tree and virtualenv.

Builds a tree shaped like a real environment under a temporary directory: thousands of
small source files (10% of the bytes), a hundred 1 MiB libraries (10%) and four large
libraries (the rest), all random so nothing compresses. Then, in one run, it times:

- saves: from scratch, with nothing changed, and after adding one 200-file custom node;
- restores: into an empty place, and onto the base after adding that node;
- copy (publish), and beside them tar create, tar extract and cp -a of the same tree.

The store and the copies live on the same disk as the tree. Files stay in the page
cache between steps, so the figures compare the tools' own costs, not cold reads.
Restore also checks the sha256 of every object it reads and flushes the disk before it
renames files into place. tar and cp -a do neither, so "tar extract + sync" is printed
as well.

Usage: .venv/bin/python bench/snapshots.py [--size-gb 1.0] [--work-dir DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from funart_runtime.snapshots import SnapshotStore

SMALL_FILE_AVERAGE = 8 * 1024
MEDIUM_FILE = 1024 * 1024
MEDIUM_FILES = 100
LARGE_FILES = 4
NODE_FILES = 200
CHUNK = 1024 * 1024


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        remaining = size
        while remaining:
            chunk = min(CHUNK, remaining)
            stream.write(os.urandom(chunk))
            remaining -= chunk


def build_tree(root: Path, total_bytes: int) -> dict[str, int]:
    """Write the synthetic ComfyUI tree and virtualenv; return file and byte counts."""
    comfy = root / "ComfyUI"
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    rng = random.Random(0)
    small_count = max(1000, total_bytes // 10 // SMALL_FILE_AVERAGE)
    written = 0

    for index in range(small_count):
        size = rng.randint(512, 2 * SMALL_FILE_AVERAGE - 512)
        if index % 5 == 0:
            path = comfy / "custom_nodes" / f"node{index % 40}" / f"module{index}.py"
        else:
            path = site / f"package{index % 300}" / f"module{index}.py"
        write_random(path, size)
        written += size

    for index in range(MEDIUM_FILES):
        write_random(site / f"package{index}" / f"_native{index}.so", MEDIUM_FILE)
        written += MEDIUM_FILE

    large = max(CHUNK, (total_bytes - written) // LARGE_FILES)
    for index in range(LARGE_FILES):
        write_random(site / "torch" / "lib" / f"libtorch_part{index}.so", large)
        written += large

    _add_links_and_dirs(root)
    return {"files": small_count + MEDIUM_FILES + LARGE_FILES, "bytes": written}


def _add_links_and_dirs(root: Path) -> None:
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    (bin_dir / "python").symlink_to("python3")
    (root / "ComfyUI" / "output").mkdir()
    (root / "ComfyUI" / "models" / "checkpoints").mkdir(parents=True)


def add_node(comfy: Path) -> None:
    for index in range(NODE_FILES):
        write_random(comfy / "custom_nodes" / "added-node" / f"file{index}.py", 4096)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(*command: str) -> None:
    subprocess.run(command, check=True)


def settle(*paths: Path) -> None:
    """Remove ``paths`` and flush the disk, so the next timed step starts from quiet."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    run("sync")


def measure(work: Path, size_bytes: int, repeat: int) -> tuple[dict[str, float], dict[str, int]]:
    """Time every step and return the seconds of each, with the tree's counts.

    Full restore, tar extract and cp -a run ``repeat`` times, interleaved, and report
    the median, because file creation times on a shared disk vary from run to run.
    """
    env = work / "env"
    roots = [env / "ComfyUI", env / "venv"]
    counts = build_tree(env, size_bytes)
    store = SnapshotStore(work / "store")
    seconds: dict[str, float] = {}

    settle()
    seconds["save from scratch"] = timed(lambda: store.save("base", roots))
    seconds["save, nothing changed"] = timed(lambda: store.save("dev-1", roots, base="base"))
    add_node(roots[0])
    seconds["save after adding a node"] = timed(
        lambda: store.save("dev-2", roots, base="base")
    )
    archive = work / "env.tar"
    seconds["tar create"] = timed(lambda: run("tar", "-cf", str(archive), "-C", str(env),
                                              "ComfyUI", "venv"))

    _measure_full_copies(work, env, store, repeat, seconds)
    seconds["restore back to base"] = timed(lambda: store.restore("base"))
    seconds["restore base + node"] = timed(lambda: store.restore("dev-2"))
    seconds["copy (publish)"] = timed(lambda: store.copy("dev-2", "prod"))
    return seconds, counts


def _measure_full_copies(work: Path, env: Path, store: SnapshotStore, repeat: int,
                         seconds: dict[str, float]) -> None:
    samples: dict[str, list[float]] = {"restore into empty place": [], "tar extract": [],
                                       "tar extract + sync": [], "cp -a": []}
    extracted = work / "tar-extract"
    copied = work / "cp-copy"
    for _ in range(repeat):
        settle(env / "ComfyUI", env / "venv")
        samples["restore into empty place"].append(timed(lambda: store.restore("dev-2")))

        settle(extracted)
        extracted.mkdir()
        extract = timed(lambda: run("tar", "-xf", str(work / "env.tar"), "-C", str(extracted)))
        samples["tar extract"].append(extract)
        samples["tar extract + sync"].append(extract + timed(lambda: run("sync")))

        settle(copied)
        copied.mkdir()
        samples["cp -a"].append(timed(lambda: run("cp", "-a", str(env / "ComfyUI"),
                                                  str(env / "venv"), str(copied))))
    settle(extracted, copied)
    for step, values in samples.items():
        seconds[step] = statistics.median(values)


def report(seconds: dict[str, float], counts: dict[str, int]) -> None:
    megabytes = counts["bytes"] / 1e6
    print(f"tree: {counts['files']} files, {megabytes:.0f} MB; "
          f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    print(f"{'step':28} {'seconds':>9} {'MB/s':>9}")
    for step, value in seconds.items():
        print(f"{step:28} {value:9.3f} {megabytes / value:9.0f}")

    full_save = seconds["save from scratch"]
    full_restore = seconds["restore into empty place"]
    ratios = [
        ("unchanged save / full save", seconds["save, nothing changed"] / full_save,
         "<= 0.05"),
        ("full restore / tar extract throughput", seconds["tar extract"] / full_restore,
         ">= 0.8"),
        ("same with sync after tar extract", seconds["tar extract + sync"] / full_restore,
         "(info)"),
        ("same-base restore / full restore", seconds["restore base + node"] / full_restore,
         "< 0.05"),
        ("copy seconds", seconds["copy (publish)"], "< 1"),
    ]
    print()
    for label, value, target in ratios:
        print(f"{label:40} {value:8.3f}   target {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Snapshot store against tar and cp -a.")
    parser.add_argument("--size-gb", type=float, default=1.0,
                        help="total size of the synthetic tree in GB (default 1.0)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="parent of the temporary trees (default: the system temp dir)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of full restore, tar extract and cp -a; the median is "
                             "reported (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="funart-bench-", dir=args.work_dir) as work:
        seconds, counts = measure(Path(work), int(args.size_gb * 1e9), args.repeat)
        report(seconds, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
