"""Task status documents in OSS, readable by any instance.

``<prefix>/tasks/<task_id>/status.json`` contains ``{task_id, status, progress,
result | error, created_at, updated_at}`` and is rewritten on every state change;
progress rewrites are throttled. ``<prefix>/tasks/<task_id>/cancel.json`` marks a
cancel request made on another instance.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from .errors import BadRequestError, FunartError, StorageError
from .storage import ObjectStore

logger = logging.getLogger(__name__)

TERMINAL_STATES = {"succeeded", "failed", "cancelled"}
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_task_id(task_id: str | None) -> str:
    """Return ``task_id`` if it is usable in an object key; raise BadRequestError if not."""
    if not task_id:
        raise BadRequestError(
            "Missing task_id. Pass it as ?task_id=<id>; it is the x-fc-async-task-id of the "
            "async call, else its x-fc-request-id.",
            code="MISSING_TASK_ID",
        )
    if not _TASK_ID.match(task_id):
        raise BadRequestError(
            f"Invalid task_id {task_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            code="INVALID_TASK_ID", details={"task_id": task_id},
        )
    return task_id


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TaskStore:
    """Status documents and cancel markers of tasks in one bucket."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, task_id: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, "tasks", task_id, name) if part)

    def read(self, task_id: str) -> dict[str, Any] | None:
        try:
            data = self.store.get_bytes(self._key(task_id, "status.json"))
        except StorageError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(data))

    def write(self, document: dict[str, Any]) -> None:
        body = json.dumps(document, separators=(",", ":")).encode()
        self.store.put_bytes(
            self._key(document["task_id"], "status.json"), body, "application/json"
        )

    def request_cancel(self, task_id: str) -> None:
        body = json.dumps({"task_id": task_id, "requested_at": now_iso()}).encode()
        self.store.put_bytes(self._key(task_id, "cancel.json"), body, "application/json")

    def cancel_requested(self, task_id: str) -> bool:
        return self.store.exists(self._key(task_id, "cancel.json"))


class TaskRecorder:
    """Keep one task's status document current: every state change, progress at most
    once per ``interval_s``.

    With no store (OSS off, or a sync call) it only keeps the document in memory.
    """

    def __init__(
        self, tasks: TaskStore | None, task_id: str, *, interval_s: float = 1.0
    ) -> None:
        self.tasks = tasks
        self.interval_s = interval_s
        created = now_iso()
        self.document: dict[str, Any] = {
            "task_id": task_id,
            "status": "queued",
            "progress": {"node": None, "value": 0, "max": 0, "nodes_done": 0, "nodes_total": 0},
            "created_at": created,
            "updated_at": created,
        }
        self._last_write = 0.0
        self._lock = threading.Lock()

    @property
    def status(self) -> str:
        return str(self.document["status"])

    def set_status(self, status: str, **fields: Any) -> None:
        with self._lock:
            if self.document["status"] == status and not fields and self._last_write:
                return
            self.document["status"] = status
            self.document.update(fields)
            self._write()

    def set_progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self.document["progress"] = progress
            if time.monotonic() - self._last_write >= self.interval_s:
                self._write()

    def succeed(self, result: dict[str, Any]) -> None:
        self.set_status("succeeded", result=result)

    def fail(self, error: FunartError, request_id: str) -> None:
        status = "cancelled" if error.code == "JOB_CANCELLED" else "failed"
        self.set_status(status, error=error.to_body(request_id))

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.document.update(fields)
            self._write()

    def _write(self) -> None:
        self.document["updated_at"] = now_iso()
        self._last_write = time.monotonic()
        if self.tasks is None:
            return
        try:
            self.tasks.write(self.document)
        except StorageError as exc:
            # The job goes on; the next state change writes the document again.
            logger.warning("Could not write the task status document: %s", exc.message)
