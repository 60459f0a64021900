"""Mapping ComfyUI 0.3.75 rejections and history entries to the project's errors.

The 400 bodies are the ones ComfyUI 0.3.75 returned for these workflows on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funart_runtime.comfy import protocol
from funart_runtime.errors import (
    ExecutionError,
    InvalidWorkflowError,
    JobCancelledError,
    UnknownNodeError,
    WorkflowValidationError,
)

HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "history"
WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}


def test_value_below_min() -> None:
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"1": {"errors": [{"type": "value_smaller_than_min", "message": "Value -5 smaller than min of 1",
                                              "details": "width", "extra_info": {"input_name": "width", "input_config": ["INT", {"default": 512, "min": 1}], "received_value": -5}}],
                                  "dependent_outputs": ["2"], "class_type": "EmptyImage"}}}

    error = protocol.prompt_rejection_error(body, WORKFLOW)

    assert isinstance(error, WorkflowValidationError)
    assert error.status == 400
    assert error.details["node_errors"] == [{
        "node_id": "1", "class_type": "EmptyImage", "input_name": "width",
        "type": "value_smaller_than_min", "message": "Value -5 smaller than min of 1",
        "details": "width", "received_value": -5,
    }]
    assert error.message.startswith("Node 1 (EmptyImage) input 'width': Value -5 smaller than min of 1")


def test_value_not_in_list_lists_files() -> None:
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [{
                "type": "value_not_in_list", "message": "Value not in list",
                "details": "ckpt_name: 'x.safetensors' not in ['a.safetensors', 'b.ckpt']",
                "extra_info": {"input_name": "ckpt_name",
                               "input_config": [["a.safetensors", "b.ckpt"], {}],
                               "received_value": "x.safetensors"}}]}}}

    error = protocol.prompt_rejection_error(body, WORKFLOW)

    [entry] = error.details["node_errors"]
    assert entry["available"] == ["a.safetensors", "b.ckpt"]
    assert "Available: a.safetensors, b.ckpt" in error.message


def test_custom_validation_uses_choices_lookup() -> None:
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "m"},
            "node_errors": {"1": {"class_type": "LoadImage", "errors": [{
                "type": "custom_validation_failed", "message": "Custom validation failed for node",
                "details": "image - Invalid image file: does_not_exist.png",
                "extra_info": {"input_name": "image"}}]}}}
    asked = []

    def choices(class_type: str, input_name: str) -> list[str]:
        asked.append((class_type, input_name))
        return ["present.png"]

    error = protocol.prompt_rejection_error(body, WORKFLOW, choices)

    assert asked == [("LoadImage", "image")]
    assert error.details["node_errors"][0]["available"] == ["present.png"]


def test_other_errors_do_not_list_files() -> None:
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "m"},
            "node_errors": {"2": {"class_type": "SaveImage", "errors": [{
                "type": "required_input_missing", "message": "Required input is missing",
                "details": "images", "extra_info": {"input_name": "images"}}]}}}

    error = protocol.prompt_rejection_error(body, WORKFLOW, lambda c, i: ["never"])

    assert "available" not in error.details["node_errors"][0]


def test_unknown_class() -> None:
    body = {"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.",
                      "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}

    error = protocol.prompt_rejection_error(body, WORKFLOW)

    assert isinstance(error, UnknownNodeError)
    assert error.details == {"node_id": "1", "class_type": "NoSuchNode"}


def test_no_outputs() -> None:
    body = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                      "extra_info": {}}, "node_errors": {}}

    error = protocol.prompt_rejection_error(body, WORKFLOW)

    assert isinstance(error, InvalidWorkflowError)
    assert "no output node" in error.message


def test_terminal_event_only_for_own_prompt() -> None:
    own = {"type": "executing", "data": {"node": None, "prompt_id": "p1"}}
    other = {"type": "executing", "data": {"node": None, "prompt_id": "p2"}}
    running = {"type": "executing", "data": {"node": "3", "prompt_id": "p1"}}

    assert protocol.is_own_terminal_event(own, "p1")
    assert not protocol.is_own_terminal_event(other, "p1")
    assert not protocol.is_own_terminal_event(running, "p1")
    assert not protocol.is_own_terminal_event({"type": "execution_success", "data": {"prompt_id": "p1"}}, "p1")


def test_history_finished() -> None:
    assert not protocol.history_is_finished(None)
    assert not protocol.history_is_finished({})
    assert not protocol.history_is_finished({"status": {}})
    assert protocol.history_is_finished({"status": {"status_str": "error", "completed": False}})
    assert protocol.history_is_finished({"status": {"status_str": "success", "completed": True}})


def test_recorded_execution_error() -> None:
    entry = json.loads((HISTORY / "execution_error.json").read_text())

    with pytest.raises(ExecutionError) as caught:
        protocol.raise_for_history_failure(entry)

    assert caught.value.details == {"node_id": "2", "node_type": "FunartTestFail",
                                    "exception_type": "ValueError",
                                    "exception_message": "exploded on purpose"}
    assert caught.value.status == 500


def test_recorded_interrupt() -> None:
    entry = json.loads((HISTORY / "interrupted.json").read_text())

    with pytest.raises(JobCancelledError) as caught:
        protocol.raise_for_history_failure(entry)

    assert caught.value.details["node_type"] == "FunartTestSlowProgress"


def test_recorded_success_passes() -> None:
    protocol.raise_for_history_failure(json.loads((HISTORY / "two_saves.json").read_text()))
