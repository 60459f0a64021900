"""``funart call``: submit a workflow to an api function, follow it, download its outputs.

Sync calls follow the job through ``?stream=true`` (Server-Sent Events). Async calls
go through FC's ``X-Fc-Invocation-Type: Async`` header with a task id chosen here,
then poll ``/api/serverless/status``; against a bare ``funart serve api`` (no FC in
front) the request simply runs to its end while the status is polled.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import requests

from .errors import BadRequestError, FunartError
from .storage import Credentials
from .workflow import is_ui_format

_TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class CallOptions:
    url: str
    use_async: bool = False
    params: list[str] = field(default_factory=list)
    out: Path | None = None
    timeout_s: float = 3600.0
    poll_interval_s: float = 0.5
    credentials: Credentials | None = None


def signature_headers(
    method: str, url: str, body: bytes, credentials: Credentials
) -> dict[str, str]:
    """Sign a request for an FC HTTP trigger with ``authType: function``.

    FC 3.0 checks Alibaba Cloud's ACS3-HMAC-SHA256 signature in ``Authorization``,
    computed here with Alibaba's own signing library over the ``x-acs-*`` headers.
    NOTE: checked against that library only; no real FC gateway is reachable here.
    """
    from alibabacloud_openapi_util.client import Client as SigningClient
    from Tea.request import TeaRequest

    parts = urlsplit(url)
    headers = {
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    if credentials.security_token:
        headers["x-acs-security-token"] = credentials.security_token

    request = TeaRequest()
    request.method = method
    request.pathname = parts.path or "/"
    request.query = dict(parse_qsl(parts.query, keep_blank_values=True))
    request.headers = dict(headers)
    headers["Authorization"] = SigningClient.get_authorization(
        request, "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"],
        credentials.access_key_id, credentials.access_key_secret,
    )
    return headers


def _request(method: str, url: str, options: CallOptions, body: bytes = b"",
             headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    headers = dict(headers or {})
    if body:
        headers["Content-Type"] = "application/json"
    if options.credentials is not None:
        headers.update(signature_headers(method, url, body, options.credentials))
    return requests.request(method, url, data=body or None, headers=headers, **kwargs)


def load_workflow(path: Path, params: list[str]) -> dict[str, Any]:
    """Read an API-format workflow file and apply ``NODE.INPUT=VALUE`` overrides."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadRequestError(f"Cannot read workflow {path}: {exc}.") from None
    if not isinstance(document, dict):
        raise BadRequestError(f"Workflow {path} is not a JSON object.")
    workflow = document.get("prompt", document)
    if is_ui_format(workflow):
        raise BadRequestError(
            f"{path} is a UI-format workflow. In ComfyUI use Workflow > Export (API) and "
            "call with that file."
        )

    workflow = copy.deepcopy(workflow)
    for param in params:
        _apply_param(workflow, param)
    return dict(workflow)


def _apply_param(workflow: dict[str, Any], param: str) -> None:
    target, sep, raw = param.partition("=")
    node_id, dot, input_name = target.partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise BadRequestError(f"Invalid --param {param!r}: use NODE.INPUT=VALUE, e.g. 3.seed=42.")
    node = workflow.get(node_id)
    if not isinstance(node, dict):
        known = ", ".join(sorted(workflow)[:30])
        raise BadRequestError(f"--param {param!r}: the workflow has no node {node_id!r} "
                              f"(nodes: {known}).")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string: 3.sampler_name=euler
    node.setdefault("inputs", {})[input_name] = value


def call(workflow: dict[str, Any], options: CallOptions, progress: TextIO = sys.stderr) -> dict:
    """Run ``workflow`` on the api function at ``options.url``; return the result document."""
    bar = ProgressBar(progress)
    if options.use_async:
        result = _call_async(workflow, options, bar)
    else:
        result = _call_stream(workflow, options, bar)
    bar.finish()
    if options.out is not None:
        download_outputs(result, options.out)
    return result


def _call_stream(workflow: dict[str, Any], options: CallOptions, bar: ProgressBar) -> dict:
    url = options.url.rstrip("/") + "/api/serverless/run?stream=true"
    body = json.dumps({"prompt": workflow}).encode()
    with _request("POST", url, options, body, stream=True,
                  timeout=(10, options.timeout_s)) as response:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            raise _remote_error(response.json(), response.status_code)
        for name, data in _events(response.iter_lines(decode_unicode=True)):
            if name == "result":
                return dict(data)
            if name == "error":
                raise _remote_error(data, 0)
            bar.update(data)
    raise FunartError("The stream ended without a result.", code="STREAM_ENDED")


def _call_async(workflow: dict[str, Any], options: CallOptions, bar: ProgressBar) -> dict:
    base = options.url.rstrip("/")
    task_id = f"funart-call-{uuid.uuid4().hex}"
    headers = {"X-Fc-Invocation-Type": "Async", "x-fc-async-task-id": task_id}
    submitted: dict[str, Any] = {}

    def submit() -> None:
        try:
            response = _request("POST", f"{base}/api/serverless/run", options,
                                json.dumps({"prompt": workflow}).encode(), headers=headers,
                                timeout=(10, options.timeout_s))
            submitted["status"] = response.status_code
            submitted["body"] = response.text
        except requests.RequestException as exc:
            submitted["exception"] = exc

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    print(f"task_id: {task_id}", file=bar.stream, flush=True)
    deadline = time.monotonic() + options.timeout_s
    while time.monotonic() < deadline:
        document = _poll_status(base, task_id, options)
        if document is not None:
            bar.update(document.get("progress") or {})
            if document["status"] in _TERMINAL:
                return _final(document)
        elif not thread.is_alive():
            _raise_submit_failure(submitted)
        time.sleep(options.poll_interval_s)
    raise FunartError(f"Task {task_id} did not finish within {options.timeout_s:g} s.",
                      code="CALL_TIMEOUT")


def _poll_status(base: str, task_id: str, options: CallOptions) -> dict[str, Any] | None:
    url = f"{base}/api/serverless/status?task_id={task_id}"
    response = _request("GET", url, options, timeout=30)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise _remote_error(response.json(), response.status_code)
    return dict(response.json())


def _final(document: dict[str, Any]) -> dict[str, Any]:
    if document["status"] == "succeeded":
        return dict(document["result"])
    raise _remote_error(document.get("error") or {}, 0)


def _raise_submit_failure(submitted: dict[str, Any]) -> None:
    if "exception" in submitted:
        raise FunartError(f"Submitting the task failed: {submitted['exception']}",
                          code="CALL_FAILED")
    try:
        body = json.loads(submitted.get("body") or "{}")
    except ValueError:
        body = {}
    if submitted.get("status", 500) >= 400:
        raise _remote_error(body, int(submitted["status"]))
    raise FunartError("The function responded, but the task has no status document. Is "
                      "FUNART_OSS_BUCKET set on the function?", code="NO_TASK_STATUS")


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: "):])


def _remote_error(body: dict[str, Any], status: int) -> FunartError:
    return FunartError(
        str(body.get("error_message") or f"The function returned HTTP {status}."),
        code=str(body.get("error_code") or "REMOTE_ERROR"),
        details=body.get("details") or {},
        status=status or 500,
    )


def download_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    """Save every output of ``result`` under ``out``: from OSS URLs, else inline base64."""
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for entry in result["data"]["results"]:
        output = entry["output"]
        raw = output.get("raw") or {}
        stem = f"{entry['node_id']}_{entry['batch_id']}"
        if "text" in raw:
            path = out / f"{stem}.txt"
            path.write_text(str(raw["text"]))
        elif output.get("oss"):
            path = out / f"{stem}_{raw['filename']}"
            response = requests.get(output["oss"]["url"], timeout=300)
            response.raise_for_status()
            path.write_bytes(response.content)
        elif output.get("base64", {}).get("content"):
            path = out / f"{stem}_{raw['filename']}"
            path.write_bytes(base64.b64decode(output["base64"]["content"]))
        else:
            continue
        saved.append(path)
    return saved


class ProgressBar:
    """A one-line progress bar on a terminal; elsewhere a line per node start and end."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_node: str | None = None
        self.last_line = ""
        self.printed = ""

    def update(self, progress: dict[str, Any]) -> None:
        node = progress.get("node")
        value, maximum = progress.get("value") or 0, progress.get("max") or 0
        done, total = progress.get("nodes_done", 0), progress.get("nodes_total", 0)
        fraction = value / maximum if maximum else 0.0
        filled = int(fraction * self.WIDTH)
        line = (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] node {node} "
                f"{value}/{maximum}  nodes {done}/{total}")
        self.last_line = line
        if self.tty:
            print(f"\r{line}", end="", file=self.stream, flush=True)
        elif node != self.last_node or (maximum and value == maximum):
            print(line, file=self.stream, flush=True)
            self.printed = line
        self.last_node = node

    def finish(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)
        elif self.last_line and self.last_line != self.printed:
            # The last update (the final node done) may not have started a new line.
            print(self.last_line, file=self.stream, flush=True)
