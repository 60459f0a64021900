"""Delivery of a job's outputs: OSS upload with signed URLs, or inline base64."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from .errors import FunartError, OutputTooLargeError
from .outputs import OutputItem, content_type, object_key
from .storage import ObjectStore


class OutputReader:
    """Read output files from ComfyUI's folders, refusing paths outside them."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = {name: path.resolve() for name, path in roots.items()}

    def read(self, item: OutputItem) -> bytes:
        root = self.roots.get(item.folder_type, self.roots["output"])
        assert item.filename is not None
        path = (root / item.subfolder / item.filename).resolve()
        if not path.is_relative_to(root):
            raise FunartError(
                f"ComfyUI reported an output outside its {item.folder_type} folder: {path}.",
                code="OUTPUT_PATH_INVALID",
            )
        return path.read_bytes()


def deliver_outputs(
    items: list[OutputItem],
    reader: OutputReader,
    *,
    store: ObjectStore | None,
    key_prefix: str,
    task_id: str,
    inline: bool,
    inline_cap: int,
) -> list[dict[str, Any]]:
    """Build FunArt's result entries: upload each file when ``store`` is set, inline
    it when ``inline``; raise OutputTooLargeError when inlined bytes pass ``inline_cap``.
    """
    results = []
    inlined = 0
    for item in items:
        entry = result_entry(item)
        if item.is_file:
            data = reader.read(item)
            if store is not None:
                entry["output"]["oss"] = _upload(store, key_prefix, task_id, item, data)
            if inline:
                inlined += len(data)
                if inlined <= inline_cap:
                    entry["output"]["base64"]["content"] = base64.b64encode(data).decode()
        results.append(entry)

    if inlined > inline_cap:
        raise _too_large_error(inlined, inline_cap, results, store)
    return results


def result_entry(item: OutputItem) -> dict[str, Any]:
    raw: dict[str, Any]
    if item.is_file:
        raw = {"filename": item.filename, "subfolder": item.subfolder, "type": item.folder_type}
    else:
        raw = {"text": item.text}
    return {
        "node_id": item.node_id,
        "batch_id": item.batch_id,
        "output": {"type": item.kind, "raw": raw, "base64": {"content": None}, "oss": None},
    }


def _upload(
    store: ObjectStore, key_prefix: str, task_id: str, item: OutputItem, data: bytes
) -> dict[str, Any]:
    assert item.filename is not None
    key = object_key(key_prefix, task_id, item)
    store.put_bytes(key, data, content_type(item.filename))
    return {"bucket": store.bucket_name, "object": key, "url": store.sign_get_url(key)}


def _too_large_error(
    size: int, cap: int, results: list[dict[str, Any]], store: ObjectStore | None
) -> OutputTooLargeError:
    # Uploaded outputs stay reachable through the error, so nothing is lost.
    for entry in results:
        entry["output"]["base64"]["content"] = None
    return OutputTooLargeError(
        f"The outputs are {size} bytes, above the base64 limit of {cap} bytes "
        "(FUNART_BASE64_MAX_BYTES). Call with output_oss=true and download them from the "
        "signed URLs.",
        details={
            "output_bytes": size,
            "limit_bytes": cap,
            "results": results if store is not None else [],
        },
    )
