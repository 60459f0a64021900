"""Pure collection of a job's outputs from its ComfyUI history entry."""

from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass
from typing import Any

from .workflow import JOB_FOLDER_PREFIX

# ui keys whose items are flags or camera data, not deliverable outputs.
_NON_OUTPUT_KEYS = {"animated"}
# Text outputs: PreviewAny and V3 PreviewText in ComfyUI 0.3.75, and custom packs.
_TEXT_KEYS = {"text", "string"}
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".opus": "audio/ogg",
    ".wav": "audio/wav",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".latent": "application/octet-stream",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class OutputItem:
    """One output of a job: a file ComfyUI wrote, or a text value."""

    node_id: str
    kind: str
    batch_id: int
    filename: str | None = None
    subfolder: str = ""
    folder_type: str = "output"
    text: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def collect_outputs(entry: dict[str, Any], *, include_temp: bool = False) -> list[OutputItem]:
    """List the outputs of a history entry in node order, one item per file or text value.

    Every ui key whose items are ``{filename, subfolder, type}`` dicts counts as files
    (images, audio, video, latents, 3D and custom kinds); ``temp`` previews are left
    out unless ``include_temp``.
    """
    outputs = entry.get("outputs") or {}
    meta = entry.get("meta") or {}
    items: list[OutputItem] = []
    for node_key in sorted(outputs, key=_node_order):
        node_id = _display_node(meta, node_key)
        ui = outputs[node_key] or {}
        for kind, values in ui.items():
            if kind in _NON_OUTPUT_KEYS or not isinstance(values, list):
                continue
            items.extend(_items_of_kind(node_id, kind, values, include_temp))
    return items


def _items_of_kind(
    node_id: str, kind: str, values: list[Any], include_temp: bool
) -> list[OutputItem]:
    items: list[OutputItem] = []
    for batch_id, value in enumerate(values):
        if isinstance(value, dict) and isinstance(value.get("filename"), str):
            folder_type = str(value.get("type") or "output")
            if folder_type == "temp" and not include_temp:
                continue
            items.append(
                OutputItem(
                    node_id=node_id,
                    kind=kind,
                    batch_id=batch_id,
                    filename=value["filename"],
                    subfolder=str(value.get("subfolder") or ""),
                    folder_type=folder_type,
                )
            )
        elif isinstance(value, str) and kind in _TEXT_KEYS:
            items.append(OutputItem(node_id=node_id, kind=kind, batch_id=batch_id, text=value))
    return items


def _node_order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _display_node(meta: dict[str, Any], node_key: str) -> str:
    # Node expansion can report outputs under generated ids; meta maps them back.
    info = meta.get(node_key)
    if isinstance(info, dict) and info.get("display_node"):
        return str(info["display_node"])
    return node_key


def content_type(filename: str) -> str:
    extension = posixpath.splitext(filename)[1].lower()
    if extension in _CONTENT_TYPES:
        return _CONTENT_TYPES[extension]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def object_key(prefix: str, task_id: str, item: OutputItem) -> str:
    """Name the OSS object of one output: ``<prefix>/tasks/<task_id>/<node>/<file>``.

    The per-job folder that the runtime adds to ``filename_prefix`` is dropped,
    because the task id already separates jobs; the rest of the subfolder stays.
    """
    assert item.filename is not None
    parts = [part for part in item.subfolder.split("/") if part]
    if parts and parts[0].startswith(JOB_FOLDER_PREFIX):
        parts = parts[1:]
    if item.folder_type != "output":
        parts.insert(0, item.folder_type)
    return "/".join([p for p in (prefix, "tasks", task_id, item.node_id) if p] + parts
                    + [item.filename])
