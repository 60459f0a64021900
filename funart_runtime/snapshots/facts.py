"""Collect environment facts for a manifest: interpreter, packages, torch, ComfyUI, nodes.

Every fact is optional. A command that fails or times out logs a warning and leaves its
fields null, because a missing fact must not fail a save.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit, urlunsplit

from ..logs import log_call
from .manifest import ComfyUIFacts, CustomNode, Environment

logger = logging.getLogger(__name__)

# Maximum seconds for one interpreter command. Importing torch can take several seconds,
# and pip freeze reads every installed package.
_COMMAND_TIMEOUT_S = 120.0
_GIT_TIMEOUT_S = 30.0
_GIT_WORKERS = 4

# One interpreter start for version, platform and torch. A torch import failure is
# reported in the output instead of failing the script.
_FACTS_SCRIPT = """
import json, platform, sys
facts = {"python_version": platform.python_version(), "platform": platform.platform()}
try:
    import torch
    facts["torch_version"] = str(torch.__version__)
    facts["cuda_version"] = torch.version.cuda
except Exception as exc:
    facts["torch_error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(facts))
"""

_VERSION_PATTERN = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


class GitFacts(TypedDict):
    git_url: str | None
    commit: str | None
    dirty: bool | None


def collect_environment(
    python: str | None, roots: list[str], deadline: float | None
) -> Environment:
    """Collect the facts of ``python`` (skipped when None) and of ComfyUI trees in ``roots``."""
    with ThreadPoolExecutor(2 + _GIT_WORKERS, thread_name_prefix="snapshot-facts") as pool:
        interpreter = pool.submit(_interpreter_facts, python, deadline) if python else None
        packages = pool.submit(_pip_freeze, python, deadline) if python else None
        comfyui, nodes = _comfyui_facts(roots, pool, deadline)

        facts = interpreter.result() if interpreter is not None else {}
        return Environment(
            python=python,
            python_version=facts.get("python_version"),
            platform=facts.get("platform"),
            torch_version=facts.get("torch_version"),
            cuda_version=facts.get("cuda_version"),
            packages=packages.result() if packages is not None else None,
            comfyui=comfyui,
            custom_nodes=nodes,
        )


def _interpreter_facts(python: str, deadline: float | None) -> dict[str, str | None]:
    output = _run([python, "-c", _FACTS_SCRIPT], "interpreter facts", deadline)
    if output is None:
        return {}
    try:
        facts = json.loads(output)
    except json.JSONDecodeError:
        logger.warning("interpreter facts of %s are not JSON: %r", python, output[:200])
        return {}

    if "torch_error" in facts:
        logger.info("torch is not importable by %s: %s", python, facts.pop("torch_error"))
    return facts


def _pip_freeze(python: str, deadline: float | None) -> list[str] | None:
    output = _run([python, "-m", "pip", "freeze"], "pip freeze", deadline)
    if output is None:
        return None
    return [line for line in output.splitlines() if line.strip()]


def _comfyui_facts(
    roots: list[str], pool: ThreadPoolExecutor, deadline: float | None
) -> tuple[ComfyUIFacts | None, list[CustomNode]]:
    """Find the first root that looks like ComfyUI and describe it and its custom nodes."""
    for root in roots:
        version_file = Path(root, "comfyui_version.py")
        nodes_dir = Path(root, "custom_nodes")
        if not (version_file.is_file() or nodes_dir.is_dir()):
            continue

        tree_git = pool.submit(git_facts, root, deadline)
        node_paths = _custom_node_paths(nodes_dir)
        node_gits = [pool.submit(git_facts, str(path), deadline) for path in node_paths]

        comfyui = ComfyUIFacts(path=root, version=_read_version(version_file),
                               **tree_git.result())
        nodes = [
            CustomNode(name=path.name, path=str(path), **future.result())
            for path, future in zip(node_paths, node_gits, strict=True)
        ]
        return comfyui, nodes
    return None, []


def _custom_node_paths(nodes_dir: Path) -> list[Path]:
    """List custom nodes: directories (or links to them) and single-file ``.py`` nodes."""
    if not nodes_dir.is_dir():
        return []
    nodes = []
    for path in sorted(nodes_dir.iterdir()):
        if path.name.startswith(".") or path.name == "__pycache__":
            continue
        if path.is_dir() or (path.is_file() and path.suffix == ".py"):
            nodes.append(path)
    return nodes


def _read_version(version_file: Path) -> str | None:
    try:
        match = _VERSION_PATTERN.search(version_file.read_text(errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def git_facts(directory: str, deadline: float | None) -> GitFacts:
    """Return git_url, commit and dirty of ``directory``, all None unless it is a repo root.

    A directory inside another checkout (a plain node folder inside a ComfyUI clone) is
    not its own repository, so it gets nulls instead of the parent's commit.
    """
    nothing: GitFacts = {"git_url": None, "commit": None, "dirty": None}
    if not os.path.isdir(directory):
        return nothing

    output = _run(["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"],
                  "git rev-parse", deadline, quiet=True)
    lines = output.splitlines() if output else []
    if len(lines) != 2 or os.path.realpath(lines[0]) != os.path.realpath(directory):
        return nothing

    url = _run(["git", "-C", directory, "config", "--get", "remote.origin.url"],
               "git config", deadline, quiet=True)
    status = _run(["git", "--no-optional-locks", "-C", directory, "status", "--porcelain"],
                  "git status", deadline)
    return {
        "git_url": strip_credentials(url.strip()) if url else None,
        "commit": lines[1],
        "dirty": None if status is None else bool(status.strip()),
    }


def strip_credentials(url: str) -> str:
    """Remove ``user:password@`` from a URL, so that no token ends up in a manifest."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _run(
    command: list[str], what: str, deadline: float | None, *, quiet: bool = False
) -> str | None:
    """Run a command and return its stdout, or None when it fails or times out.

    ``quiet`` marks commands whose failure is expected (``git rev-parse`` outside a
    repository), which are logged at DEBUG instead of WARNING.
    """
    timeout = _GIT_TIMEOUT_S if command[0] == "git" else _COMMAND_TIMEOUT_S
    if deadline is not None:
        timeout = max(0.1, min(timeout, deadline - time.monotonic()))

    try:
        with log_call(logger, what, path=_subject(command)):
            result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                    timeout=timeout, check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        level = logging.DEBUG if quiet else logging.WARNING
        logger.log(level, "%s failed for %s: %s", what, _subject(command), _describe(exc))
        return None
    return result.stdout


def _subject(command: list[str]) -> str:
    if command[0] == "git":
        return command[command.index("-C") + 1]
    return command[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        stderr = (exc.stderr or "").strip().splitlines()
        return f"exit status {exc.returncode}" + (f": {stderr[-1]}" if stderr else "")
    return f"{type(exc).__name__}: {exc}"
