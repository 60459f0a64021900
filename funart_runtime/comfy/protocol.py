"""Pure readings of ComfyUI 0.3.75 documents: websocket events, history entries, 400 bodies."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import (
    ExecutionError,
    FunartError,
    InvalidWorkflowError,
    JobCancelledError,
    UnknownNodeError,
    WorkflowValidationError,
)

# Validation error types where the rejected value is a file name that a model or input
# folder does not contain.
_FILE_ERROR_TYPES = {"value_not_in_list", "custom_validation_failed"}
_UNKNOWN_NODE = re.compile(r"Cannot execute because node (?P<class_type>.+?) does not exist")
_NODE_ID = re.compile(r"#(?P<node_id>[^']+)")

ChoicesLookup = Callable[[str, str], "list[str] | None"]


def is_own_terminal_event(message: dict[str, Any], prompt_id: str) -> bool:
    """Tell whether ``message`` is ``executing`` with ``node: null`` for ``prompt_id``.

    ComfyUI sends it after the history entry is written, for success, error and
    interrupt alike.
    """
    if message.get("type") != "executing":
        return False
    data = message.get("data") or {}
    return data.get("node") is None and data.get("prompt_id") == prompt_id


def history_is_finished(entry: dict[str, Any] | None) -> bool:
    if not entry:
        return False
    status = entry.get("status") or {}
    return bool(status.get("completed")) or status.get("status_str") in {"success", "error"}


def raise_for_history_failure(entry: dict[str, Any]) -> None:
    """Raise ExecutionError or JobCancelledError when the history entry did not succeed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return

    messages = {event: data for event, data in status.get("messages", []) if isinstance(data, dict)}
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        raise JobCancelledError(
            "The job was interrupted before it finished.",
            details={"node_id": data.get("node_id"), "node_type": data.get("node_type")},
        )

    data = messages.get("execution_error", {})
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    exception_type = data.get("exception_type")
    exception_message = str(data.get("exception_message", "")).strip()
    raise ExecutionError(
        f"Node {node_id} ({node_type}) failed with {exception_type}: {exception_message}",
        details={
            "node_id": node_id,
            "node_type": node_type,
            "exception_type": exception_type,
            "exception_message": exception_message,
        },
    )


def prompt_rejection_error(
    body: dict[str, Any],
    workflow: dict[str, Any],
    choices: ChoicesLookup | None = None,
) -> FunartError:
    """Translate a 400 body from ``POST /prompt`` into the project's error."""
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    error_type = error.get("type")
    message = str(error.get("message") or "ComfyUI rejected the workflow")

    if error_type == "invalid_prompt":
        return _invalid_prompt_error(error, workflow)

    if error_type == "prompt_no_outputs":
        return InvalidWorkflowError(
            "The workflow has no output node. Add a node that saves or previews its "
            "result, such as SaveImage.",
            details={"comfyui_error": error_type},
        )

    node_errors = _flatten_node_errors(body.get("node_errors") or {}, choices)
    return WorkflowValidationError(
        _validation_summary(message, node_errors),
        details={"comfyui_error": error_type, "node_errors": node_errors},
    )


def _invalid_prompt_error(error: dict[str, Any], workflow: dict[str, Any]) -> FunartError:
    message = str(error.get("message", ""))
    node_match = _NODE_ID.search(str(error.get("details", "")))
    node_id = node_match.group("node_id") if node_match else None

    unknown = _UNKNOWN_NODE.search(message)
    if unknown:
        class_type = unknown.group("class_type")
        return UnknownNodeError(
            f"Node {node_id} uses class_type {class_type!r}, which this ComfyUI does not have. "
            "Install the custom node that provides it, or fix the class name.",
            details={"node_id": node_id, "class_type": class_type},
        )

    node = workflow.get(node_id, {}) if node_id else {}
    return InvalidWorkflowError(
        f"ComfyUI rejected the workflow: {message}",
        details={"node_id": node_id, "class_type": node.get("class_type") if node else None},
    )


def _flatten_node_errors(
    node_errors: dict[str, Any], choices: ChoicesLookup | None
) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for node_id, node_error in node_errors.items():
        class_type = node_error.get("class_type")
        for item in node_error.get("errors", []):
            extra = item.get("extra_info") or {}
            entry: dict[str, Any] = {
                "node_id": node_id,
                "class_type": class_type,
                "input_name": extra.get("input_name"),
                "type": item.get("type"),
                "message": item.get("message"),
                "details": item.get("details"),
            }
            if "received_value" in extra:
                entry["received_value"] = extra["received_value"]
            available = _available_files(item, extra, class_type, choices)
            if available is not None:
                entry["available"] = available
            flat.append(entry)
    return flat


def _available_files(
    item: dict[str, Any],
    extra: dict[str, Any],
    class_type: str | None,
    choices: ChoicesLookup | None,
) -> list[str] | None:
    if item.get("type") not in _FILE_ERROR_TYPES:
        return None

    config = extra.get("input_config")
    if isinstance(config, list) and config and isinstance(config[0], list):
        return [str(name) for name in config[0]]

    input_name = extra.get("input_name")
    if choices is None or not class_type or not input_name:
        return None
    return choices(class_type, input_name)


def _validation_summary(message: str, node_errors: list[dict[str, Any]]) -> str:
    if not node_errors:
        return f"ComfyUI rejected the workflow: {message}."
    first = node_errors[0]
    summary = (
        f"Node {first['node_id']} ({first['class_type']}) input {first['input_name']!r}: "
        f"{first['message']}"
    )
    if first.get("details"):
        summary += f" ({first['details']})"
    if "available" in first:
        shown = ", ".join(first["available"][:20]) or "none"
        summary += f". Available: {shown}"
    more = len(node_errors) - 1
    if more:
        summary += f"; and {more} more error(s) in details.node_errors"
    return summary + "."
