"""Model files for the workspace: download (resumable, checked), pre-cache, upload.

Models live on NAS in ``models/<folder>/``, shared by the workspace and api functions.
A download first looks in the NAS pre-cache (``funart/model-cache/``, by sha256 or by
file name), then fetches the URL into ``<name>.part``, resuming from its size with a
Range request, and renames it into place only once the sha256 matches. ComfyUI
lists model folders on demand, so a new file is usable without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from .errors import BadRequestError, FunartError
from .fetch import open_checked

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ +()-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024
# Small network reads keep what arrived before a dropped connection, for the resume.
_NETWORK_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ModelTarget:
    folder: str
    filename: str
    path: Path


def model_target(models_root: Path, folder: str, filename: str) -> ModelTarget:
    """Check ``folder`` and ``filename`` and return where the model goes."""
    for what, value in (("folder", folder), ("filename", filename)):
        if not _SAFE_NAME.match(value) or value in {".", ".."} or ".." in value:
            raise BadRequestError(
                f"Invalid model {what} {value!r}: use letters, digits, '.', '_', '-', spaces "
                "or brackets, without '/' or '..'.",
                code="INVALID_MODEL_PATH", details={what: value},
            )
    return ModelTarget(folder, filename, models_root / folder / filename)


def filename_from_url(url: str) -> str:
    name = Path(unquote(urlsplit(url).path)).name
    if not name:
        raise BadRequestError(
            f"Cannot take a file name from {url!r}; pass filename.", code="INVALID_MODEL_PATH"
        )
    return name


def check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if not _SHA256.match(lowered):
        raise BadRequestError(
            f"Invalid sha256 {value!r}: expected 64 hexadecimal characters.",
            code="INVALID_PARAMETER", details={"sha256": value},
        )
    return lowered


def download_model(
    url: str,
    target: ModelTarget,
    *,
    sha256: str | None,
    cache_root: Path,
    allow_private: bool,
    timeout_s: float,
) -> dict[str, object]:
    """Put the model at ``target``: already there, from the pre-cache, or downloaded."""
    if target.path.exists() and (sha256 is None or _file_sha256(target.path) == sha256):
        return _result(target, "existing", sha256 or _file_sha256(target.path))

    cached = _find_cached(cache_root, target.filename, sha256)
    if cached is not None:
        digest = _copy_checked(cached, target.path, sha256)
        return _result(target, "cache", digest)

    digest = _download_resumable(url, target.path, sha256, allow_private, timeout_s)
    return _result(target, "download", digest)


def save_upload(chunks: Iterable[bytes], target: ModelTarget, sha256: str | None) -> str:
    """Stream an uploaded model to ``target`` through a .part file; return its sha256."""
    part = _part_path(target.path)
    part.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(part, "wb") as file:
        for chunk in chunks:
            digest.update(chunk)
            file.write(chunk)
    return _finish(part, target.path, digest.hexdigest(), sha256)


def _find_cached(cache_root: Path, filename: str, sha256: str | None) -> Path | None:
    candidates = [cache_root / sha256] if sha256 else []
    candidates.append(cache_root / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _copy_checked(source: Path, target: Path, sha256: str | None) -> str:
    part = _part_path(target)
    part.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, part)
    return _finish(part, target, _file_sha256(part), sha256)


def _download_resumable(
    url: str, target: Path, sha256: str | None, allow_private: bool, timeout_s: float
) -> str:
    part = _part_path(target)
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}

    with open_checked(url, allow_private=allow_private, timeout_s=timeout_s,
                      headers=headers) as response:
        if response.status_code == 416:
            offset = part.stat().st_size  # the part file is already complete
        elif response.status_code not in (200, 206):
            raise BadRequestError(
                f"Model URL {url!r} returned HTTP {response.status_code}.",
                code="MODEL_DOWNLOAD_FAILED", details={"url": url, "status": response.status_code},
            )
        else:
            if response.status_code == 200:
                offset = 0  # the server ignored Range: start over
            logger.info("Downloading model %s from byte %s", target.name, offset)
            _write_stream(response, part, append=offset > 0, url=url)

    return _finish(part, target, _file_sha256(part), sha256)


def _write_stream(response: requests.Response, part: Path, *, append: bool, url: str) -> None:
    try:
        with open(part, "ab" if append else "wb") as file:
            for chunk in response.iter_content(_NETWORK_CHUNK):
                file.write(chunk)
    except requests.RequestException as exc:
        # The .part file stays, so the next call resumes from where this one stopped.
        raise FunartError(
            f"Model download from {url!r} was interrupted ({type(exc).__name__}); send the "
            "same request again to resume.",
            code="MODEL_DOWNLOAD_INTERRUPTED", status=502, details={"url": url},
        ) from None


def _finish(part: Path, target: Path, digest: str, expected: str | None) -> str:
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise BadRequestError(
            f"Checksum mismatch for {target.name}: expected sha256 {expected}, got {digest}. "
            "The file was removed; check the URL and the checksum.",
            code="CHECKSUM_MISMATCH", details={"expected": expected, "actual": digest},
        )
    with open(part, "rb") as file:
        os.fsync(file.fileno())
    os.replace(part, target)
    return digest


def _part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _result(target: ModelTarget, source: str, sha256: str) -> dict[str, object]:
    return {
        "folder": target.folder,
        "filename": target.filename,
        "path": str(target.path),
        "bytes": target.path.stat().st_size,
        "sha256": sha256,
        "source": source,
    }
