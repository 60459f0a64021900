"""Output collection from recorded ComfyUI 0.3.75 history documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from funart_runtime.outputs import OutputItem, collect_outputs, content_type, object_key

HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "history"


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((HISTORY / f"{name}.json").read_text()))


def test_two_save_nodes_in_node_order() -> None:
    items = collect_outputs(recorded("two_saves"))

    assert [(i.node_id, i.kind, i.batch_id, i.filename) for i in items] == [
        ("4", "images", 0, "inverted_00001_.png"),
        ("5", "images", 0, "blurred_00001_.png"),
    ]
    assert all(i.subfolder == "demo" and i.folder_type == "output" for i in items)


def test_temp_previews_skipped_by_default() -> None:
    items = collect_outputs(recorded("preview_and_save_batch"))

    assert [(i.node_id, i.batch_id) for i in items] == [("3", 0), ("3", 1)]


def test_temp_previews_included_on_request() -> None:
    items = collect_outputs(recorded("preview_and_save_batch"), include_temp=True)

    assert [(i.node_id, i.batch_id, i.folder_type) for i in items] == [
        ("2", 0, "temp"), ("2", 1, "temp"), ("3", 0, "output"), ("3", 1, "output"),
    ]


@pytest.mark.parametrize(
    ("name", "kind", "suffix"),
    [("audio", "audio", ".flac"), ("animated_webp", "images", ".webp"), ("latent", "latents", ".latent")],
)
def test_file_kinds(name: str, kind: str, suffix: str) -> None:
    [item] = collect_outputs(recorded(name))

    assert item.kind == kind
    assert item.filename is not None and item.filename.endswith(suffix)


def test_animated_flag_is_not_an_output() -> None:
    items = collect_outputs(recorded("animated_webp"))

    assert [i.kind for i in items] == ["images"]


def test_text_value_collected() -> None:
    [item] = collect_outputs(recorded("text"))

    assert item == OutputItem(node_id="3", kind="text", batch_id=0, text="33")
    assert not item.is_file


def test_failed_and_interrupted_have_no_outputs() -> None:
    assert collect_outputs(recorded("execution_error")) == []
    assert collect_outputs(recorded("interrupted")) == []


def test_numeric_node_order_not_lexical() -> None:
    entry = {"outputs": {
        "10": {"images": [{"filename": "b.png", "subfolder": "", "type": "output"}]},
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
        "x": {"images": [{"filename": "c.png", "subfolder": "", "type": "output"}]},
    }}

    assert [i.node_id for i in collect_outputs(entry)] == ["9", "10", "x"]


def test_custom_kind_and_mixed_lists() -> None:
    entry = {"outputs": {"7": {
        "gifs": [{"filename": "v.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}],
        "result": ["model.glb", {"camera": 1}, None],
    }}}

    items = collect_outputs(entry)

    assert [(i.kind, i.filename) for i in items] == [("gifs", "v.mp4")]


def test_expanded_node_mapped_to_display_node() -> None:
    entry = {
        "outputs": {"12.0.1": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
        "meta": {"12.0.1": {"node_id": "12.0.1", "display_node": "12"}},
    }

    [item] = collect_outputs(entry)

    assert item.node_id == "12"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [("a.png", "image/png"), ("a.WEBP", "image/webp"), ("a.flac", "audio/flac"),
     ("a.mp4", "video/mp4"), ("a.glb", "model/gltf-binary"), ("a.latent", "application/octet-stream"),
     ("a.unknownext", "application/octet-stream")],
)
def test_content_type(filename: str, expected: str) -> None:
    assert content_type(filename) == expected


def test_object_key_drops_job_folder() -> None:
    item = OutputItem("9", "images", 0, "x_00001_.png", "funart-abc123/demo/sub", "output")

    assert object_key("funart", "task-1", item) == "funart/tasks/task-1/9/demo/sub/x_00001_.png"


def test_object_key_temp_and_empty_prefix() -> None:
    item = OutputItem("2", "images", 1, "ComfyUI_temp_x_00002_.png", "", "temp")

    assert object_key("", "t", item) == "tasks/t/2/temp/ComfyUI_temp_x_00002_.png"
