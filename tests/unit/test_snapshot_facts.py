"""Environment facts in snapshot manifests: interpreter, packages, ComfyUI and custom nodes."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

from funart_runtime.snapshots import SnapshotStore
from funart_runtime.snapshots.facts import strip_credentials
from tests.unit.test_snapshot_support import PYTHON, write

GIT_IDENTITY = ["-c", "user.name=Snapshot Test", "-c", "user.email=test@example.invalid"]


def git(directory: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(directory), *GIT_IDENTITY, *args],
                            capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()


def make_repo(directory: Path, origin: str | None = None) -> str:
    """Commit everything in ``directory`` as a new repository; return the commit."""
    git(directory, "init", "--quiet")
    git(directory, "add", "-A")
    git(directory, "commit", "--quiet", "-m", "initial")
    if origin is not None:
        git(directory, "remote", "add", "origin", origin)
    return git(directory, "rev-parse", "HEAD")


@pytest.fixture()
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    write(root / "comfyui_version.py", '# generated\n__version__ = "0.3.75"\n')
    write(root / "main.py", "print('comfy')\n")
    write(root / "custom_nodes" / "example_node.py.example", "x")
    write(root / "custom_nodes" / "single_node.py", "NODE_CLASS_MAPPINGS = {}\n")
    return root


def test_facts_of_git_tree_and_nodes(comfy: Path, tmp_path: Path) -> None:
    plain = comfy / "custom_nodes" / "plain-node"
    write(plain / "__init__.py", "plain")
    comfy_commit = make_repo(comfy, origin=str(tmp_path / "upstream" / "ComfyUI.git"))
    clean = comfy / "custom_nodes" / "clean-node"
    write(clean / "__init__.py", "clean")
    clean_commit = make_repo(clean, origin=str(tmp_path / "upstream" / "clean-node.git"))
    dirty = comfy / "custom_nodes" / "dirty-node"
    write(dirty / "__init__.py", "dirty")
    make_repo(dirty)
    write(dirty / "__init__.py", "edited")

    manifest = SnapshotStore(tmp_path / "store").save("dev", [comfy])

    environment = manifest.environment
    assert environment.comfyui is not None
    assert environment.comfyui.version == "0.3.75"
    assert environment.comfyui.commit == comfy_commit
    assert environment.comfyui.git_url == str(tmp_path / "upstream" / "ComfyUI.git")
    nodes = {node.name: node for node in environment.custom_nodes}
    assert sorted(nodes) == ["clean-node", "dirty-node", "plain-node", "single_node.py"]
    assert nodes["clean-node"].commit == clean_commit
    assert nodes["clean-node"].git_url == str(tmp_path / "upstream" / "clean-node.git")
    assert nodes["clean-node"].dirty is False
    assert nodes["dirty-node"].dirty is True
    assert nodes["dirty-node"].git_url is None
    assert (nodes["plain-node"].commit, nodes["plain-node"].dirty) == (None, None)
    assert nodes["single_node.py"].commit is None


def test_interpreter_facts_recorded(comfy: Path, tmp_path: Path) -> None:
    manifest = SnapshotStore(tmp_path / "store").save("dev", [comfy], python=PYTHON)

    environment = manifest.environment
    assert environment.python == PYTHON
    assert environment.python_version == platform.python_version()
    assert environment.platform
    assert environment.packages is not None
    assert any(line.lower().startswith("pydantic==") for line in environment.packages)
    assert environment.torch_version is None


def test_no_python_skips_interpreter(comfy: Path, tmp_path: Path) -> None:
    manifest = SnapshotStore(tmp_path / "store").save("dev", [comfy])

    environment = manifest.environment
    assert environment.python is None
    assert environment.python_version is None
    assert environment.packages is None
    assert environment.comfyui is not None


def test_broken_interpreter_tolerated(comfy: Path, tmp_path: Path) -> None:
    manifest = SnapshotStore(tmp_path / "store").save(
        "dev", [comfy], python=tmp_path / "no-such-python"
    )

    assert manifest.environment.python_version is None
    assert manifest.environment.packages is None


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:token@example.invalid/a/b.git", "https://example.invalid/a/b.git"),
    ("https://example.invalid/a.git", "https://example.invalid/a.git"),
    ("git@example.invalid:a/b.git", "git@example.invalid:a/b.git"),
    ("/srv/git/node.git", "/srv/git/node.git"),
])
def test_credentials_stripped(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected
