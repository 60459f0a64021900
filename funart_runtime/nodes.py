"""Custom node installation for the workspace: git through a mirror, or an archive.

GitHub URLs are rewritten to ``FUNART_GITHUB_MIRROR`` (for users in mainland China),
requirements are installed with ComfyUI's interpreter through ``FUNART_PIP_INDEX_URL``,
and archives are unpacked only when no member would land outside the node folder.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BadRequestError, FunartError, TaskConflictError
from .logs import log_call

logger = logging.getLogger(__name__)

GITHUB = "https://github.com/"
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_MAX_ARCHIVE_BYTES = 512 * 1024 * 1024


def mirror_url(url: str, mirror: str) -> str:
    """Rewrite a GitHub URL to the configured mirror (prefix or host style)."""
    if mirror and url.startswith(GITHUB):
        return mirror.rstrip("/") + "/" + url[len(GITHUB):]
    return url


def node_name(url: str, name: str | None = None) -> str:
    candidate = name or url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not _NODE_NAME.match(candidate):
        raise BadRequestError(
            f"Invalid custom node name {candidate!r}: use letters, digits, '.', '_' or '-'.",
            code="INVALID_NODE_NAME", details={"name": candidate},
        )
    return candidate


def check_git_request(url: str, ref: str | None) -> None:
    if not url.startswith(("https://", "http://")):
        raise BadRequestError(
            f"Invalid git URL {url!r}: use an https:// URL such as "
            "https://github.com/owner/repo.", code="INVALID_NODE_SOURCE", details={"url": url},
        )
    if ref is not None and (not _REF.match(ref) or ".." in ref):
        raise BadRequestError(
            f"Invalid git ref {ref!r}: use a branch, tag or commit.",
            code="INVALID_NODE_SOURCE", details={"ref": ref},
        )


def clone_node(url: str, ref: str | None, target: Path, *, mirror: str, timeout_s: float) -> str:
    """Clone ``url`` at ``ref`` into ``target``; return the checked-out commit."""
    _check_free(target)
    source = mirror_url(url, mirror)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        work = Path(scratch) / target.name
        _git(["clone", "--quiet", source, str(work)], timeout_s)
        if ref:
            _git(["-C", str(work), "checkout", "--quiet", ref], timeout_s)
        commit = _git(["-C", str(work), "rev-parse", "HEAD"], timeout_s).strip()
        work.rename(target)
    return commit


def unpack_archive(data: bytes, target: Path) -> None:
    """Unpack a zip or tar(.gz) node archive into ``target``, refusing unsafe members."""
    _check_free(target)
    if len(data) > _MAX_ARCHIVE_BYTES:
        raise BadRequestError("The node archive is larger than 512 MiB.", code="ARCHIVE_TOO_LARGE")
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        work = Path(scratch) / "unpacked"
        if zipfile.is_zipfile(io.BytesIO(data)):
            _unzip(data, work)
        else:
            _untar(data, work)
        root = _single_top_folder(work)
        root.rename(target)


def install_requirements(
    node_dir: Path, python: Path, *, index_url: str, timeout_s: float
) -> str | None:
    """Install the node's requirements.txt with ComfyUI's interpreter; return pip's tail."""
    requirements = node_dir / "requirements.txt"
    if not requirements.is_file():
        return None
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check",
               "-r", str(requirements)]
    if index_url:
        command += ["--index-url", index_url]
    with log_call(logger, "pip.install", node=node_dir.name):
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                check=False)
    tail = (result.stdout + result.stderr)[-3000:]
    if result.returncode != 0:
        raise FunartError(
            f"Installing the requirements of {node_dir.name} failed (pip exit status "
            f"{result.returncode}). Check FUNART_PIP_INDEX_URL and the pip output in details.",
            code="NODE_REQUIREMENTS_FAILED", status=502, details={"pip_output": tail},
        )
    return tail


def import_failures(log_lines: list[str], name: str) -> list[str]:
    """Return ComfyUI log lines that report a failed import of node ``name``."""
    markers = ("IMPORT FAILED", "Cannot import")
    return [line for line in log_lines
            if any(marker in line for marker in markers) and name in line]


def _check_free(target: Path) -> None:
    if target.exists():
        raise TaskConflictError(
            f"Custom node {target.name!r} is already installed at {target}. Remove it first.",
            code="NODE_EXISTS", details={"name": target.name},
        )
    target.parent.mkdir(parents=True, exist_ok=True)


def _git(arguments: list[str], timeout_s: float) -> str:
    command = ["git", *arguments]
    with log_call(logger, "git", action=arguments[2] if arguments[0] == "-C" else arguments[0]):
        try:
            # No terminal prompt: a private or missing repository fails instead of hanging.
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                    check=False, env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
        except subprocess.TimeoutExpired:
            raise FunartError(f"git {arguments[0]} timed out after {timeout_s:g} s.",
                              code="NODE_CLONE_FAILED", status=502) from None
    if result.returncode != 0:
        raise FunartError(
            f"git failed: {result.stderr.strip()[-1000:]}. Check the URL, the ref and "
            "FUNART_GITHUB_MIRROR.", code="NODE_CLONE_FAILED", status=502,
        )
    return result.stdout


def _unzip(data: bytes, work: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.infolist():
            _check_member(member.filename)
            mode = (member.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise _unsafe(member.filename, "symbolic links are not allowed in archives")
        archive.extractall(work)


def _untar(data: bytes, work: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                _check_member(member.name)
            # The "data" filter refuses links out of the tree, devices and absolute paths.
            archive.extractall(work, filter="data")
    except tarfile.TarError as exc:
        raise BadRequestError(
            f"The node archive is neither zip nor tar: {exc}.", code="INVALID_ARCHIVE"
        ) from None


def _check_member(name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise _unsafe(name, "it would be written outside the node folder")


def _unsafe(name: str, reason: str) -> BadRequestError:
    return BadRequestError(
        f"Archive member {name!r} rejected: {reason}.",
        code="UNSAFE_ARCHIVE", details={"member": name},
    )


def _single_top_folder(work: Path) -> Path:
    # Archives made from a folder have one top directory; others are the node itself.
    entries = list(work.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return work

