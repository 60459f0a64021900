"""Parsing run requests and preparing workflows."""

from __future__ import annotations

import json

import pytest

from funart_runtime.errors import (
    BadRequestError,
    InvalidJSONError,
    InvalidWorkflowError,
    UIFormatWorkflowError,
)
from funart_runtime.workflow import RunOptions, is_ui_format, isolate_outputs, parse_run_request

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out/x"}},
}


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_bare_workflow() -> None:
    request = parse_run_request(body(WORKFLOW), {})

    assert request.workflow == WORKFLOW
    assert request.options == RunOptions(output_oss=None, output_base64=False, output_temp=False)


def test_wrapped_workflow_with_flags() -> None:
    request = parse_run_request(body({"prompt": WORKFLOW, "output_base64": True}), {})

    assert request.workflow == WORKFLOW
    assert request.options.output_base64 is True


def test_workflow_key_accepted() -> None:
    assert parse_run_request(body({"workflow": WORKFLOW}), {}).workflow == WORKFLOW


def test_query_flags_win() -> None:
    request = parse_run_request(
        body({"prompt": WORKFLOW, "output_oss": True}), {"output_oss": "false", "output_temp": "1"}
    )

    assert request.options.output_oss is False
    assert request.options.output_temp is True


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", BadRequestError),
        (b"   ", BadRequestError),
        (b"{", InvalidJSONError),
        (b"\xff\xfe", InvalidJSONError),
        (b"[]", InvalidWorkflowError),
        (b'"text"', InvalidWorkflowError),
        (b"{}", InvalidWorkflowError),
        (b'{"prompt": "x"}', InvalidWorkflowError),
        (b'{"prompt": {}}', InvalidWorkflowError),
        (b'{"a": 1}', InvalidWorkflowError),
        (b'{"1": {"class_type": "X", "inputs": []}}', InvalidWorkflowError),
        (b'{"1": {"class_type": "X"}, "2": {"inputs": {}}}', InvalidWorkflowError),
        (b'{"1": {"class_type": ""}}', InvalidWorkflowError),
        (b'{"nodes": [], "links": []}', UIFormatWorkflowError),
        (b'{"prompt": {"nodes": [], "links": []}}', UIFormatWorkflowError),
    ],
)
def test_bad_bodies(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_run_request(raw, {})


def test_lone_node_without_class_type() -> None:
    with pytest.raises(InvalidWorkflowError) as caught:
        parse_run_request(body({"1": {"inputs": {}}}), {})

    assert caught.value.details == {"node_id": "1"}
    assert "has no class_type" in caught.value.message


def test_missing_class_type_names_node() -> None:
    with pytest.raises(InvalidWorkflowError) as caught:
        parse_run_request(body({"1": {"class_type": "X"}, "7": {"inputs": {}}}), {})

    assert caught.value.details == {"node_id": "7"}
    assert "'7'" in caught.value.message


def test_invalid_flag() -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_run_request(body(WORKFLOW), {"output_oss": "sometimes"})

    assert caught.value.code == "INVALID_PARAMETER"
    assert caught.value.details == {"parameter": "output_oss", "value": "sometimes"}


def test_ui_format_detection() -> None:
    assert is_ui_format({"nodes": [], "links": []})
    assert not is_ui_format({"nodes": {}, "links": []})
    assert not is_ui_format(WORKFLOW)


def test_isolate_outputs_prefixes_save_nodes() -> None:
    prepared = isolate_outputs(WORKFLOW, "job1")

    assert prepared["2"]["inputs"]["filename_prefix"] == "funart-job1/out/x"
    assert WORKFLOW["2"]["inputs"]["filename_prefix"] == "out/x"
    assert prepared["1"] == WORKFLOW["1"]


def test_isolate_outputs_empty_prefix_and_links() -> None:
    workflow = {
        "1": {"class_type": "SaveImage", "inputs": {"filename_prefix": ""}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": ["9", 0]}},
    }

    prepared = isolate_outputs(workflow, "j")

    assert prepared["1"]["inputs"]["filename_prefix"] == "funart-j/ComfyUI"
    assert prepared["2"]["inputs"]["filename_prefix"] == ["9", 0]


@pytest.mark.parametrize("prefix", ["../x", "a/../../x", "/abs/x", "\\\\server\\x", "a\\..\\..\\x"])
def test_isolate_outputs_rejects_escaping_prefix(prefix: str) -> None:
    workflow = {"5": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix}}}

    with pytest.raises(InvalidWorkflowError) as caught:
        isolate_outputs(workflow, "j")

    assert caught.value.details["node_id"] == "5"
    assert caught.value.details["filename_prefix"] == prefix
