"""Loader inputs given as URLs, OSS objects or base64, staged as job-local files.

ComfyUI marks upload widgets in ``/object_info`` with ``image_upload``,
``audio_upload``, ``video_upload`` or ``file_upload``. A string value of such an
input may be ``http(s)://…``, ``oss://bucket/key``, a ``data:`` URI or bare base64;
the bytes are written to ``<input>/funart-<job>/<n>.<ext>`` with an ASCII name, and
the input is pointed at that file, so concurrent jobs never see each other's files.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import BadRequestError
from .workflow import job_folder

logger = logging.getLogger(__name__)

# Values shorter than this that are not URLs are file names, never base64.
_MIN_BASE64_CHARS = 64
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+/-]*)(?P<params>(;[\w=.-]+)*);base64,(?P<data>.*)$",
                       re.DOTALL)
_SEED_INPUTS = ("seed", "noise_seed")
_MAX_SEED = 2**53

# Leading bytes of the media formats ComfyUI's loaders read, to name staged files.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"),
    (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\x1a\x45\xdf\xa3", ".webm"),
)
_TYPE_EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/flac": ".flac", "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg", "video/mp4": ".mp4", "video/webm": ".webm",
}

UploadInputs = Callable[[str], set[str]]
Fetcher = Callable[[str], tuple[bytes, str]]


@dataclass(frozen=True)
class PendingInput:
    node_id: str
    input_name: str
    kind: str
    value: str


def classify(value: str) -> str:
    """Tell what an upload-widget value is: url, oss, data_uri, base64 or file."""
    lowered = value[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return "url"
    if lowered.startswith("oss://"):
        return "oss"
    if lowered.startswith("data:"):
        return "data_uri"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return "unsupported_url"
    # A long value without a file extension is meant as base64, even if it is broken,
    # so the caller hears "invalid base64" rather than "file not found".
    has_extension = re.search(r"\.[A-Za-z0-9]{1,5}$", value.split(" [")[0]) is not None
    if len(value) >= _MIN_BASE64_CHARS and (_BASE64.match(value[:4096]) or not has_extension):
        return "base64"
    return "file"


def find_inputs(workflow: Mapping[str, Any], upload_inputs: UploadInputs) -> list[PendingInput]:
    """List the upload-widget inputs of ``workflow`` that need staging or checking."""
    pending = []
    for node_id, node in workflow.items():
        names = upload_inputs(node["class_type"])
        for name, value in (node.get("inputs") or {}).items():
            if name in names and isinstance(value, str):
                pending.append(PendingInput(node_id, name, classify(value), value))
    return pending


def check_file_name(item: PendingInput) -> None:
    """Reject a file name that would leave ComfyUI's input folder."""
    name = item.value.split(" [")[0]  # ComfyUI's " [input]" annotation
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise BadRequestError(
            f"Node {item.node_id} input {item.input_name!r} is {item.value!r}, which leaves "
            "the input folder. Use a file name inside it, a URL, oss://bucket/key or base64.",
            code="INVALID_INPUT_PATH",
            details={"node_id": item.node_id, "input_name": item.input_name, "value": item.value},
        )


def decode_base64(item: PendingInput) -> tuple[bytes, str]:
    """Decode a data URI or bare base64 value; return the bytes and the declared type."""
    content_type = ""
    data = item.value
    if item.kind == "data_uri":
        match = _DATA_URI.match(item.value)
        if match is None:
            raise _bad_base64(item, "the data URI is not of the form data:<type>;base64,<data>")
        content_type, data = match.group("type"), match.group("data")
    try:
        compact = "".join(data.split())
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact), content_type
        return base64.b64decode(compact, validate=True), content_type
    except (binascii.Error, ValueError) as exc:
        raise _bad_base64(item, str(exc)) from None


def _bad_base64(item: PendingInput, reason: str) -> BadRequestError:
    return BadRequestError(
        f"Node {item.node_id} input {item.input_name!r} is not valid base64: {reason}. "
        "Send standard base64, a data: URI, a URL or oss://bucket/key.",
        code="INVALID_BASE64",
        details={"node_id": item.node_id, "input_name": item.input_name},
    )


def extension_for(data: bytes, content_type: str, source: str) -> str:
    """Choose a file extension from the bytes, then the content type, then the source name."""
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return ".webp" if data[8:12] == b"WEBP" else ".wav"
    if data[4:8] == b"ftyp":
        return ".mp4"
    if content_type in _TYPE_EXTENSIONS:
        return _TYPE_EXTENSIONS[content_type]
    suffix = Path(unquote(urlsplit(source).path)).suffix.lower()
    return suffix if re.match(r"^\.[a-z0-9]{1,5}$", suffix) else ".bin"


def split_oss_url(value: str) -> tuple[str, str]:
    """Split ``oss://bucket/key`` into bucket and key."""
    parts = urlsplit(value)
    key = parts.path.lstrip("/")
    if not parts.netloc or not key:
        raise BadRequestError(
            f"Invalid OSS input {value!r}: use oss://<bucket>/<object key>.",
            code="INVALID_INPUT_URL", details={"value": value},
        )
    return parts.netloc, key


def stage_inputs(
    workflow: Mapping[str, Any],
    pending: list[PendingInput],
    *,
    input_dir: Path,
    job_id: str,
    fetch_url: Fetcher,
    fetch_oss: Fetcher,
) -> dict[str, Any]:
    """Write every non-file input under the job's input folder; return the new workflow."""
    prepared = copy.deepcopy(dict(workflow))
    folder = job_folder(job_id)
    for index, item in enumerate(pending):
        if item.kind == "file":
            check_file_name(item)
            continue
        if item.kind == "unsupported_url":
            raise BadRequestError(
                f"Node {item.node_id} input {item.input_name!r} is {item.value!r}: only "
                "http(s):// URLs, oss://bucket/key, base64 and file names are accepted.",
                code="INVALID_INPUT_URL",
                details={"node_id": item.node_id, "input_name": item.input_name,
                         "value": item.value},
            )
        data, content_type = _fetch(item, fetch_url, fetch_oss)
        name = f"{index}{extension_for(data, content_type, item.value)}"
        target = input_dir / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        prepared[item.node_id]["inputs"][item.input_name] = f"{folder}/{name}"
        logger.info("Staged input %s.%s (%s, %s bytes)", item.node_id, item.input_name,
                    item.kind, len(data))
    return prepared


def _fetch(item: PendingInput, fetch_url: Fetcher, fetch_oss: Fetcher) -> tuple[bytes, str]:
    if item.kind == "url":
        return fetch_url(item.value)
    if item.kind == "oss":
        return fetch_oss(item.value)
    return decode_base64(item)


def randomize_seeds(workflow: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Replace every ``seed``/``noise_seed`` of -1 with a random seed; return what was set."""
    chosen: dict[str, dict[str, int]] = {}
    for node_id, node in workflow.items():
        inputs = node.get("inputs") or {}
        for name in _SEED_INPUTS:
            if inputs.get(name) == -1 and not isinstance(inputs.get(name), bool):
                inputs[name] = secrets.randbelow(_MAX_SEED)
                chosen.setdefault(node_id, {})[name] = inputs[name]
    return chosen
