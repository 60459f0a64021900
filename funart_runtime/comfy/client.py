"""Synchronous ComfyUI job client: one websocket and one client_id per job.

The websocket is a hint and ``/history/{prompt_id}`` is the truth. After any
websocket drop or read timeout the client checks history before it waits again,
and every job has an overall deadline. Usable outside the server (CLI, tests).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

from ..errors import ComfyUIError, JobCancelledError, JobTimeoutError
from ..logs import log_call, prompt_id_var
from . import protocol

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]


@dataclass
class JobResult:
    prompt_id: str
    history: dict[str, Any]
    execution_time: float
    events: list[str] = field(default_factory=list)


class ComfyClient:
    """Talk to one ComfyUI server over HTTP and websocket.

    ``liveness`` is called after every websocket drop or read timeout; it raises
    when the ComfyUI process behind the server is gone, so jobs fail at once
    instead of waiting for their deadline.
    """

    def __init__(
        self,
        base_url: str,
        *,
        liveness: Callable[[], None] | None = None,
        http_timeout_s: float = 30.0,
        ws_read_timeout_s: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http"):] + "/ws"
        self.liveness = liveness or (lambda: None)
        self.http_timeout_s = http_timeout_s
        self.ws_read_timeout_s = ws_read_timeout_s
        self.session = _thread_session()

    # ---- HTTP ---------------------------------------------------------------

    def submit(self, workflow: dict[str, Any], client_id: str) -> str:
        """Queue ``workflow`` and return its prompt id; raise the mapped error on a 400."""
        # client_id is always sent: without it ComfyUI 0.3.75 leaves cached outputs
        # out of history. extra_data is always sent so custom nodes can read it.
        body = {"prompt": workflow, "client_id": client_id, "extra_data": {}}
        with log_call(logger, "comfyui.post_prompt", nodes=len(workflow)):
            response = self.session.post(
                f"{self.base_url}/prompt", json=body, timeout=self.http_timeout_s
            )

        if response.status_code == 400:
            raise protocol.prompt_rejection_error(_json(response), workflow, self.input_choices)
        if response.status_code != 200:
            raise ComfyUIError(
                f"ComfyUI returned HTTP {response.status_code} for POST /prompt.",
                details={"status": response.status_code, "body": response.text[:2000]},
            )

        answer = _json(response)
        if answer.get("node_errors"):
            # 200 with node errors means some outputs were dropped: treat as a failure.
            raise protocol.prompt_rejection_error(
                {"error": {"type": "prompt_outputs_failed_validation", "message": "Some outputs "
                           "failed validation"}, "node_errors": answer["node_errors"]},
                workflow,
                self.input_choices,
            )
        return str(answer["prompt_id"])

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        with log_call(logger, "comfyui.get_history"):
            response = self.session.get(
                f"{self.base_url}/history/{prompt_id}", timeout=self.http_timeout_s
            )
        response.raise_for_status()
        entry = _json(response).get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt ``prompt_id`` if it runs, and drop it from the queue if it waits."""
        with log_call(logger, "comfyui.interrupt"):
            self.session.post(
                f"{self.base_url}/interrupt", json={"prompt_id": prompt_id},
                timeout=self.http_timeout_s,
            )
            self.session.post(
                f"{self.base_url}/queue", json={"delete": [prompt_id]},
                timeout=self.http_timeout_s,
            )

    def upload_input_names(self, class_type: str) -> set[str]:
        """Return the inputs of ``class_type`` that ComfyUI marks as file upload widgets."""
        info = self._object_info(class_type)
        names = set()
        for group in ("required", "optional"):
            for name, spec in (info.get("input", {}).get(group) or {}).items():
                options = spec[1] if isinstance(spec, list) and len(spec) > 1 else {}
                if isinstance(options, dict) and any(
                    key.endswith("_upload") and value for key, value in options.items()
                ):
                    names.add(name)
        return names

    def _object_info(self, class_type: str) -> dict[str, Any]:
        with log_call(logger, "comfyui.get_object_info", class_type=class_type):
            response = self.session.get(
                f"{self.base_url}/object_info/{class_type}", timeout=self.http_timeout_s
            )
        info = _json(response).get(class_type, {})
        return info if isinstance(info, dict) else {}

    def input_choices(self, class_type: str, input_name: str) -> list[str] | None:
        """Return the allowed values of a list input, such as the files a loader can read."""
        try:
            info = self._object_info(class_type)
        except (requests.RequestException, ComfyUIError):
            return None
        for group in ("required", "optional"):
            spec = (info.get("input", {}).get(group) or {}).get(input_name)
            if isinstance(spec, list) and spec and isinstance(spec[0], list):
                return [str(name) for name in spec[0]]
        return None

    # ---- one job ----------------------------------------------------------

    def queue_ids(self) -> set[str]:
        """Return the prompt ids ComfyUI is running or holding in its queue."""
        with log_call(logger, "comfyui.get_queue"):
            response = self.session.get(f"{self.base_url}/queue", timeout=self.http_timeout_s)
        document = _json(response)
        items = document.get("queue_running", []) + document.get("queue_pending", [])
        return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1}

    def run(
        self,
        workflow: dict[str, Any],
        *,
        deadline_s: float,
        on_event: EventCallback | None = None,
        cancel_requested: Callable[[], bool] | None = None,
    ) -> JobResult:
        """Run ``workflow`` to its end and return its history entry.

        ``cancel_requested`` is polled about once a second; when it returns true the
        prompt is interrupted if it runs, or removed from ComfyUI's queue if it waits.
        """
        job = _Job(
            client_id=uuid.uuid4().hex,
            deadline=time.monotonic() + deadline_s,
            on_event=on_event,
            cancel_requested=cancel_requested or (lambda: False),
        )
        if job.cancel_requested():
            raise _cancelled_error("before it was queued")
        ws = self._connect(job.client_id)
        try:
            started = time.monotonic()
            job.prompt_id = self.submit(workflow, job.client_id)
            prompt_id_var.set(job.prompt_id)
            logger.info("Job queued")
            events, entry = self._follow(ws, job)
            return JobResult(job.prompt_id, entry, time.monotonic() - started, events)
        finally:
            if ws is not None:
                ws.close()

    def _connect(self, client_id: str) -> websocket.WebSocket | None:
        try:
            with log_call(logger, "comfyui.ws_connect"):
                # ComfyUI's frames are JSON that json.loads checks anyway; websocket-client's
                # pure-Python UTF-8 check cost more CPU than the rest of the job.
                return websocket.create_connection(
                    f"{self.ws_url}?clientId={client_id}", timeout=self.ws_read_timeout_s,
                    enable_multithread=False, skip_utf8_validation=True,
                )
        except (OSError, websocket.WebSocketException):
            # Without a websocket the job still completes; history polling takes over.
            self.liveness()
            return None

    def _follow(
        self, ws: websocket.WebSocket | None, job: _Job
    ) -> tuple[list[str], dict[str, Any]]:
        events: list[str] = []
        prompt_id = job.prompt_id
        while True:
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                self._give_up(prompt_id)
            self._handle_cancel(job)

            if ws is None:
                entry = self._check_history(prompt_id)
                if entry is not None:
                    return events, entry
                time.sleep(min(1.0, max(remaining, 0)))
                ws = self._connect(job.client_id)
                continue

            try:
                ws.settimeout(min(self.ws_read_timeout_s, max(remaining, 0.05)))
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                # A quiet node is normal (long sampling steps); only history decides.
                entry = self._check_history(prompt_id)
                if entry is not None:
                    return events, entry
                continue
            except (OSError, websocket.WebSocketException):
                logger.warning("ComfyUI websocket dropped; checking history")
                ws.close()
                ws = None
                continue

            message = _parse_frame(frame)
            if message is None:
                continue
            events.append(str(message.get("type")))
            if job.on_event is not None:
                job.on_event(message)
            if protocol.is_own_terminal_event(message, prompt_id):
                return events, self._final_history(prompt_id, job.deadline)

    def _handle_cancel(self, job: _Job) -> None:
        if not job.cancel_sent:
            if not job.cancel_requested():
                return
            logger.info("Cancel requested; interrupting the prompt")
            self.interrupt(job.prompt_id)
            job.cancel_sent = True

        # A running prompt ends through its own events and history. A prompt removed
        # from the queue before it started leaves neither, so it ends here.
        if job.prompt_id in self.queue_ids() or self.history(job.prompt_id):
            return
        raise _cancelled_error("while it waited in ComfyUI's queue")

    def _check_history(self, prompt_id: str) -> dict[str, Any] | None:
        self.liveness()
        try:
            entry = self.history(prompt_id)
        except requests.RequestException:
            self.liveness()
            return None
        return entry if protocol.history_is_finished(entry) else None

    def _final_history(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        # The terminal event follows the history write, so one read is normally enough.
        while time.monotonic() < deadline:
            entry = self._check_history(prompt_id)
            if entry is not None:
                return entry
            time.sleep(0.1)
        self._give_up(prompt_id)
        raise AssertionError("unreachable")

    def _give_up(self, prompt_id: str) -> None:
        try:
            self.interrupt(prompt_id)
        except requests.RequestException:
            logger.warning("Could not interrupt the timed-out job")
        raise JobTimeoutError(
            "The job did not finish within FUNART_JOB_TIMEOUT_S and was interrupted. "
            "Raise the timeout or use async invocation for long jobs.",
            details={"prompt_id": prompt_id},
        )


@dataclass
class _Job:
    client_id: str
    deadline: float
    on_event: EventCallback | None
    cancel_requested: Callable[[], bool]
    prompt_id: str = ""
    cancel_sent: bool = False


def _cancelled_error(when: str) -> JobCancelledError:
    return JobCancelledError(f"The job was cancelled {when}.")


_local = threading.local()
# ComfyUI 0.3.75 sends '{"type": "status", ...}' to every socket on each queue change;
# jobs skip them before parsing, because with N jobs each socket gets N times as many.
_STATUS_PREFIX = '{"type": "status"'


def _thread_session() -> requests.Session:
    # One keep-alive session per thread: sessions are not thread-safe, and a new one
    # per job would open new connections to ComfyUI every time.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        # ComfyUI is on loopback: no proxy applies, and reading proxy variables from
        # the environment on every request is measurable CPU.
        session.trust_env = False
    return session


def _parse_frame(frame: str | bytes) -> dict[str, Any] | None:
    # Binary frames are previews and progress text; the job needs only JSON events.
    if isinstance(frame, bytes) or frame.startswith(_STATUS_PREFIX):
        return None
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        raise ComfyUIError(
            f"ComfyUI responded to {response.request.method} {response.request.path_url} "
            f"with HTTP {response.status_code} and a body that is not JSON.",
            details={"status": response.status_code, "body": response.text[:2000]},
        ) from None
    return document if isinstance(document, dict) else {}
