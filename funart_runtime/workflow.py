"""Pure preparation of a run request: parse the body, check the workflow, isolate outputs."""

from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequestError, InvalidJSONError, InvalidWorkflowError, UIFormatWorkflowError

# Keys of a wrapped body that carry the workflow, in the order they are looked up.
_WORKFLOW_KEYS = ("prompt", "workflow")
_FLAGS = ("output_oss", "output_base64", "output_temp", "stream")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

JOB_FOLDER_PREFIX = "funart-"


@dataclass(frozen=True)
class RunOptions:
    """Per-request delivery flags. ``output_oss=None`` means "when a bucket is configured"."""

    output_oss: bool | None = None
    output_base64: bool = False
    output_temp: bool = False
    stream: bool = False


@dataclass(frozen=True)
class RunRequest:
    workflow: dict[str, Any]
    options: RunOptions
    webhook_url: str | None = None


def parse_run_request(body: bytes, query: Mapping[str, str]) -> RunRequest:
    """Parse ``POST /api/serverless/run``: a bare or wrapped API-format workflow plus flags.

    Flags come from the query string, or from a wrapped body; the query wins.
    """
    document = _load_json(body)
    if not isinstance(document, dict):
        raise InvalidWorkflowError(
            f"The request body is JSON {type(document).__name__}, not an object. Send an "
            'API-format workflow such as {"3": {"class_type": "...", "inputs": {...}}}.',
            details={"json_type": type(document).__name__},
        )

    workflow, wrapper = _unwrap(document)
    flags = {name: wrapper[name] for name in _FLAGS if name in wrapper}
    flags.update({name: query[name] for name in _FLAGS if name in query})
    options = RunOptions(
        output_oss=_flag(flags, "output_oss", None),
        output_base64=bool(_flag(flags, "output_base64", False)),
        output_temp=bool(_flag(flags, "output_temp", False)),
        stream=bool(_flag(flags, "stream", False)),
    )
    check_api_workflow(workflow)
    return RunRequest(workflow=workflow, options=options, webhook_url=_webhook_url(wrapper))


def is_ui_format(document: Mapping[str, Any]) -> bool:
    """Tell whether ``document`` is a ComfyUI UI-format (editor) workflow."""
    return isinstance(document.get("nodes"), list) and "links" in document


def check_api_workflow(workflow: Mapping[str, Any]) -> None:
    """Raise InvalidWorkflowError unless every node has a class_type and an inputs object."""
    if not workflow:
        raise InvalidWorkflowError(
            "The workflow is empty. Send an API-format workflow exported from ComfyUI "
            "with Workflow > Export (API)."
        )
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            raise InvalidWorkflowError(
                f"Node {node_id!r} is {type(node).__name__}, not an object with class_type "
                "and inputs.",
                details={"node_id": node_id},
            )
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise InvalidWorkflowError(
                f"Node {node_id!r} has no class_type. Every node needs the name of its "
                "ComfyUI class, e.g. \"SaveImage\".",
                details={"node_id": node_id},
            )
        if not isinstance(node.get("inputs", {}), dict):
            raise InvalidWorkflowError(
                f"Node {node_id!r} has inputs of type {type(node['inputs']).__name__}; "
                "inputs must be an object.",
                details={"node_id": node_id, "class_type": node["class_type"]},
            )
        _check_links(workflow, node_id, node)


def _check_links(workflow: Mapping[str, Any], node_id: str, node: Mapping[str, Any]) -> None:
    # A link is [source node id, output index]; ComfyUI responds to a dangling one with a
    # KeyError traceback, so it is caught here with a clear message.
    for name, value in (node.get("inputs") or {}).items():
        is_link = (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                   and isinstance(value[1], int))
        if is_link and value[0] not in workflow:
            raise InvalidWorkflowError(
                f"Node {node_id} ({node['class_type']}) input {name!r} links to node "
                f"{value[0]!r}, which is not in the workflow.",
                details={"node_id": node_id, "input_name": name, "missing_node": value[0]},
            )


def job_folder(job_id: str) -> str:
    return f"{JOB_FOLDER_PREFIX}{job_id}"


def isolate_outputs(workflow: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """Return a copy of ``workflow`` whose save nodes write under the job's own folder.

    A per-job ``filename_prefix`` makes every save node run again on a cached
    re-submission (so its files exist and are new) and keeps concurrent jobs
    from sharing files. Only the save nodes re-run: upstream results stay cached.
    """
    prepared = copy.deepcopy(dict(workflow))
    folder = job_folder(job_id)
    for node_id, node in prepared.items():
        inputs = node.get("inputs") or {}
        prefix = inputs.get("filename_prefix")
        if not isinstance(prefix, str):
            # NOTE: a prefix wired from another node's output cannot be rewritten here.
            continue
        _check_prefix(node_id, node["class_type"], prefix)
        inputs["filename_prefix"] = f"{folder}/{prefix or 'ComfyUI'}"
    return prepared


def _check_prefix(node_id: str, class_type: str, prefix: str) -> None:
    parts = prefix.replace("\\", "/").split("/")
    if prefix.startswith(("/", "\\")) or ".." in parts or posixpath.isabs(prefix):
        raise InvalidWorkflowError(
            f"Node {node_id} ({class_type}) has filename_prefix {prefix!r}, which leaves the "
            "output folder. Use a relative prefix without '..', such as \"results/img\".",
            details={"node_id": node_id, "class_type": class_type, "filename_prefix": prefix},
        )


def _load_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequestError(
            "The request body is empty. Send an API-format workflow as JSON "
            "(ComfyUI: Workflow > Export (API)).",
            code="EMPTY_BODY",
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSONError(
            f"The request body is not valid JSON: {exc}. Send the workflow as a JSON object.",
            details={"body_prefix": body[:200].decode("utf-8", "replace")},
        ) from None


def _unwrap(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if is_ui_format(document):
        raise _ui_format_error()

    for key in _WORKFLOW_KEYS:
        if key in document:
            workflow = document[key]
            if not isinstance(workflow, dict):
                raise InvalidWorkflowError(
                    f"The {key!r} field is {type(workflow).__name__}; it must be an API-format "
                    "workflow object.",
                    details={"field": key},
                )
            if is_ui_format(workflow):
                raise _ui_format_error()
            return workflow, document

    # Every value an object: a bare workflow, checked node by node next.
    looks_bare = bool(document) and all(isinstance(node, dict) for node in document.values())
    if looks_bare:
        return document, {}
    raise InvalidWorkflowError(
        "The request has no workflow. Send the API-format workflow as the body, or wrap it "
        'as {"prompt": {...}}.',
        details={"keys": sorted(document)[:20]},
    )


def _webhook_url(wrapper: Mapping[str, Any]) -> str | None:
    url = wrapper.get("webhook_url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.strip():
        raise BadRequestError(
            f"Invalid webhook_url {url!r}: it must be an http(s) URL string.",
            code="INVALID_PARAMETER", details={"parameter": "webhook_url"},
        )
    return url.strip()


def _ui_format_error() -> UIFormatWorkflowError:
    return UIFormatWorkflowError(
        "This is a UI-format workflow (it has 'nodes' and 'links'). The API runs API-format "
        "workflows: in ComfyUI use Workflow > Export (API) and send that file.",
    )


def _flag(flags: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    if name not in flags:
        return default
    value = flags[name]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequestError(
        f"Invalid value for {name}: {value!r}. Use true or false.",
        code="INVALID_PARAMETER",
        details={"parameter": name, "value": value},
    )
