"""The api function's work: run workflows on the local ComfyUI, sync or as async tasks."""

from __future__ import annotations

import collections
import json
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import webhook
from .comfy.client import ComfyClient
from .comfy.process import ComfyDirs, ComfyProcess
from .comfy.protocol import raise_for_history_failure
from .delivery import OutputReader, deliver_outputs
from .errors import (
    BadRequestError,
    FunartError,
    JobCancelledError,
    NotReadyError,
    StorageError,
    TaskConflictError,
    TaskNotFoundError,
    TooManyJobsError,
)
from .fetch import download
from .inputs import find_inputs, randomize_seeds, split_oss_url, stage_inputs
from .logs import task_id_var
from .outputs import collect_outputs
from .progress import ProgressTracker
from .settings import Settings
from .snapshots.store import SnapshotStore
from .storage import Credentials, ObjectStore
from .tasks import TERMINAL_STATES, TaskRecorder, TaskStore, check_task_id
from .urlguard import check_url
from .workflow import RunRequest, isolate_outputs, job_folder

logger = logging.getLogger(__name__)

StreamCallback = Callable[[dict[str, Any]], None]
# How often a running async job looks for a cancel marker written by another instance.
_REMOTE_CANCEL_CHECK_S = 2.0
# How long POST /cancel waits for a local job to end before it responds.
_CANCEL_WAIT_S = 15.0


@dataclass(frozen=True)
class RequestContext:
    """The caller's FC ids, headers and invocation type."""

    request_id: str
    task_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    is_async: bool = False


@dataclass
class _RunningJob:
    recorder: TaskRecorder
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class ApiService:
    """Lifecycle and jobs of one api instance."""

    def __init__(self, settings: Settings, process: ComfyProcess | None = None) -> None:
        self.settings = settings
        self.dirs = ComfyDirs.for_api(settings)
        self.process = process or ComfyProcess(settings, self.dirs)
        self.reader = OutputReader(
            {"output": self.dirs.output, "temp": self.dirs.temp, "input": self.dirs.input}
        )
        self._jobs: dict[str, _RunningJob] = {}
        self._lock = threading.Condition()
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._draining = False
        self._upload_names: dict[str, set[str]] = {}

    # ---- lifecycle ------------------------------------------------------------

    def initialize(self) -> dict[str, Any]:
        """Restore FUNART_SNAPSHOT if set, then start ComfyUI (the FC Initializer hook)."""
        self._draining = False
        if self.settings.snapshot:
            report = SnapshotStore.from_settings(self.settings).restore(self.settings.snapshot)
            logger.info("Restored snapshot %s: %s", self.settings.snapshot, report.as_dict())
        self.process.start()
        return {"comfyui": "ready", "pid": self.process.pid, "snapshot": self.settings.snapshot}

    def pre_stop(self) -> dict[str, Any]:
        """Stop taking jobs, let running ones finish (bounded), then stop ComfyUI."""
        self._draining = True
        deadline = time.monotonic() + self.settings.prestop_timeout_s
        with self._lock:
            while self._jobs and time.monotonic() < deadline:
                self._lock.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = len(self._jobs)
        if left:
            logger.warning("Pre-stop timed out with %s job(s) still running", left)
        self.process.stop()
        return {"comfyui": "stopped", "unfinished_jobs": left}

    def health(self) -> dict[str, Any]:
        state = self.process.current_state
        return {
            "ready": state == "ready",
            "comfyui": state,
            "comfyui_pid": self.process.pid,
            "running_jobs": len(self._jobs),
            "max_jobs": self.settings.max_jobs,
            "draining": self._draining,
        }

    # ---- one job --------------------------------------------------------------

    def run(
        self,
        request: RunRequest,
        context: RequestContext,
        on_stream: StreamCallback | None = None,
    ) -> dict[str, Any]:
        """Run ``request`` and return FunArt's result document; raise FunartError on failure.

        An async call also keeps the task's status document in OSS current, and a
        task id that already succeeded returns its stored result without running again.
        """
        task_id_var.set(context.task_id)
        self._check_request(request)
        if context.is_async:
            check_task_id(context.task_id)  # it becomes part of OSS object keys
        tasks = self._task_store_or_none(context.headers) if context.is_async else None
        stored = self._previous_outcome(tasks, context.task_id)
        if stored is not None:
            return stored

        recorder = TaskRecorder(tasks, context.task_id,
                                interval_s=self.settings.progress_interval_s)
        job = self._admit(context.task_id, recorder)
        started = time.monotonic()
        try:
            recorder.set_status("queued")
            result = self._execute(request, context, job, tasks, on_stream)
            recorder.succeed(result)
            self._notify(request, context, recorder, json.dumps(result).encode())
            return result
        except FunartError as exc:
            recorder.fail(exc, context.request_id)
            body = json.dumps(exc.to_body(context.request_id)).encode()
            self._notify(request, context, recorder, body)
            raise
        finally:
            self._release(context.task_id, job, time.monotonic() - started)

    def status(self, task_id: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
        """Return the status document of ``task_id``, from OSS or from this instance."""
        task_id = check_task_id(task_id)
        with self._lock:
            local = self._jobs.get(task_id)
        if local is not None and local.recorder.tasks is None:
            return dict(local.recorder.document)

        tasks = self._task_store_or_none(headers)
        found = tasks.read(task_id) if tasks is not None else None
        if found is None:
            raise TaskNotFoundError(
                f"No task {task_id!r}: it was never submitted as an async call here, or its "
                "status expired. Check the id (x-fc-async-task-id of the call).",
                details={"task_id": task_id},
            )
        return found

    def cancel(self, task_id: str | None, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Cancel ``task_id``: at once if it runs here, else through a marker in OSS."""
        task_id = check_task_id(task_id)
        with self._lock:
            local = self._jobs.get(task_id)
        if local is not None:
            logger.info("Cancelling task %s on this instance", task_id)
            local.cancel.set()
            local.done.wait(_CANCEL_WAIT_S)
            return 200, dict(local.recorder.document)

        tasks = self._task_store_or_none(headers)
        document = tasks.read(task_id) if tasks is not None else None
        if tasks is None or document is None:
            raise TaskNotFoundError(
                f"No task {task_id!r} to cancel.", details={"task_id": task_id}
            )
        if document["status"] in TERMINAL_STATES:
            raise TaskConflictError(
                f"Task {task_id!r} already ended as {document['status']}; nothing to cancel.",
                details={"task_id": task_id, "status": document["status"]},
            )
        tasks.request_cancel(task_id)
        return 202, {**document, "cancel_requested": True}

    # ---- steps ------------------------------------------------------------------

    def _check_request(self, request: RunRequest) -> None:
        if self._draining:
            raise NotReadyError("The instance is shutting down; send the request again.")
        upload = self.settings.oss_enabled if request.options.output_oss is None \
            else request.options.output_oss
        if not upload and not request.options.output_base64:
            raise BadRequestError(
                "The outputs would be lost: with OSS off and output_base64=false nothing "
                "returns the files. Call with output_base64=true, or configure "
                "FUNART_OSS_BUCKET and FUNART_OSS_ENDPOINT.",
                code="NO_OUTPUT_DELIVERY",
            )
        if request.options.output_oss and not self.settings.oss_enabled:
            raise BadRequestError(
                "output_oss=true, but no bucket is configured. Set FUNART_OSS_ENDPOINT and "
                "FUNART_OSS_BUCKET, or call with output_oss=false and output_base64=true.",
                code="OSS_NOT_CONFIGURED",
            )
        if request.webhook_url is not None:
            if not self.settings.webhook_secret:
                raise BadRequestError(
                    "webhook_url needs FUNART_WEBHOOK_SECRET to sign deliveries; set it on the "
                    "function or leave webhook_url out.",
                    code="WEBHOOK_SECRET_MISSING",
                )
            check_url(request.webhook_url, allow_private=self.settings.allow_private_urls,
                      what="webhook_url")

    def _previous_outcome(self, tasks: TaskStore | None, task_id: str) -> dict[str, Any] | None:
        # FC may deliver an async task again, so a finished one returns its result from OSS.
        if tasks is None:
            return None
        document = tasks.read(task_id)
        if document is None:
            return None
        if document["status"] == "succeeded":
            logger.info("Task already succeeded; returning the stored result")
            return dict(document["result"])
        if document["status"] == "cancelled":
            raise JobCancelledError("The task was cancelled before this delivery.")
        return None

    def _admit(self, task_id: str, recorder: TaskRecorder) -> _RunningJob:
        with self._lock:
            if task_id in self._jobs:
                raise TaskConflictError(
                    f"Task {task_id!r} is already running on this instance.",
                    code="TASK_ALREADY_RUNNING", details={"task_id": task_id},
                )
            if len(self._jobs) >= self.settings.max_jobs:
                retry_after = self._retry_after_s()
                raise TooManyJobsError(
                    f"This instance already has {len(self._jobs)} jobs (FUNART_MAX_JOBS="
                    f"{self.settings.max_jobs}). Retry after {retry_after} s.",
                    details={"max_jobs": self.settings.max_jobs, "retry_after_s": retry_after},
                    headers={"Retry-After": str(retry_after)},
                )
            job = _RunningJob(recorder)
            self._jobs[task_id] = job
            return job

    def _release(self, task_id: str, job: _RunningJob, seconds: float) -> None:
        with self._lock:
            self._jobs.pop(task_id, None)
            self._durations.append(seconds)
            self._lock.notify_all()
        job.done.set()

    def _retry_after_s(self) -> int:
        if not self._durations:
            return 5
        average = sum(self._durations) / len(self._durations)
        return min(60, max(1, math.ceil(average)))

    def _execute(
        self,
        request: RunRequest,
        context: RequestContext,
        job: _RunningJob,
        tasks: TaskStore | None,
        on_stream: StreamCallback | None,
    ) -> dict[str, Any]:
        generation = self.process.ensure_ready()
        client = ComfyClient(
            self.settings.comfyui_url,
            liveness=lambda: self.process.check_alive(generation),
        )
        job_id = uuid.uuid4().hex
        workflow = isolate_outputs(request.workflow, job_id)
        seeds = randomize_seeds(workflow)
        try:
            workflow = self._stage_inputs(workflow, client, context, job_id)
            outcome = client.run(
                workflow,
                deadline_s=self.settings.job_timeout_s,
                on_event=self._event_handler(job, len(workflow), on_stream),
                cancel_requested=self._cancel_check(job, tasks, context.task_id),
            )
            raise_for_history_failure(outcome.history)
            items = collect_outputs(outcome.history, include_temp=request.options.output_temp)
            if not items:
                raise _no_outputs_error(outcome.prompt_id, request.options.output_temp)
            results = self._deliver(items, request, context)
        finally:
            # Outputs are removed only after delivery, so a failed upload loses nothing
            # until the job ends.
            shutil.rmtree(self.dirs.output / job_folder(job_id), ignore_errors=True)
            shutil.rmtree(self.dirs.input / job_folder(job_id), ignore_errors=True)

        logger.info("Job succeeded: %s output(s) in %.2f s", len(results), outcome.execution_time)
        data: dict[str, Any] = {
            "prompt_id": outcome.prompt_id,
            "task_id": context.task_id,
            "execution_time": round(outcome.execution_time, 3),
            "results": results,
        }
        if seeds:
            data["seeds"] = seeds
        return {"type": "serverless_api", "data": data}

    def _stage_inputs(
        self, workflow: dict[str, Any], client: ComfyClient, context: RequestContext, job_id: str
    ) -> dict[str, Any]:
        pending = find_inputs(workflow, lambda class_type: self._upload_inputs(client, class_type))
        if not pending:
            return workflow
        return stage_inputs(
            workflow, pending, input_dir=self.dirs.input, job_id=job_id,
            fetch_url=self._fetch_url,
            fetch_oss=lambda value: self._fetch_oss(value, context),
        )

    def _upload_inputs(self, client: ComfyClient, class_type: str) -> set[str]:
        # Node classes do not change while ComfyUI runs, so /object_info is read once each.
        if class_type not in self._upload_names:
            self._upload_names[class_type] = client.upload_input_names(class_type)
        return self._upload_names[class_type]

    def _fetch_url(self, url: str) -> tuple[bytes, str]:
        fetched = download(url, allow_private=self.settings.allow_private_urls,
                           max_bytes=self.settings.input_max_bytes,
                           timeout_s=self.settings.input_timeout_s)
        return fetched.data, fetched.content_type

    def _fetch_oss(self, value: str, context: RequestContext) -> tuple[bytes, str]:
        bucket, key = split_oss_url(value)
        credentials = Credentials.resolve(context.headers, self.settings)
        if credentials is None or not self.settings.oss_endpoint:
            raise BadRequestError(
                f"Input {value!r} needs OSS: set FUNART_OSS_ENDPOINT and give the function a "
                "role or credentials.", code="OSS_NOT_CONFIGURED",
            )
        store = ObjectStore(self.settings.oss_endpoint, bucket, credentials,
                            url_expires_s=self.settings.oss_url_expires_s)
        try:
            data = store.get_bytes(key)
        except StorageError as exc:
            raise BadRequestError(
                f"Could not read input {value!r}: {exc.message}", code="INPUT_FETCH_FAILED",
                details={"value": value},
            ) from None
        if len(data) > self.settings.input_max_bytes:
            raise BadRequestError(
                f"Input {value!r} is {len(data)} bytes, above FUNART_INPUT_MAX_BYTES="
                f"{self.settings.input_max_bytes}.", code="INPUT_TOO_LARGE",
            )
        return data, ""

    def _event_handler(
        self, job: _RunningJob, nodes: int, on_stream: StreamCallback | None
    ) -> Callable[[dict[str, Any]], None]:
        tracker: ProgressTracker | None = None

        def handle(message: dict[str, Any]) -> None:
            nonlocal tracker
            data = message.get("data") or {}
            if tracker is None:
                if message.get("type") != "execution_start":
                    return
                tracker = ProgressTracker(str(data.get("prompt_id")), nodes)
            for event in tracker.update(message):
                if event["event"] == "started":
                    job.recorder.set_status("running")
                else:
                    job.recorder.set_progress(tracker.summary())
                if on_stream is not None:
                    on_stream(event)

        return handle

    def _cancel_check(
        self, job: _RunningJob, tasks: TaskStore | None, task_id: str
    ) -> Callable[[], bool]:
        last_remote_check = 0.0

        def cancel_requested() -> bool:
            nonlocal last_remote_check
            if job.cancel.is_set():
                return True
            if tasks is None or time.monotonic() - last_remote_check < _REMOTE_CANCEL_CHECK_S:
                return False
            last_remote_check = time.monotonic()
            if tasks.cancel_requested(task_id):
                job.cancel.set()
            return job.cancel.is_set()

        return cancel_requested

    def _deliver(
        self, items: list[Any], request: RunRequest, context: RequestContext
    ) -> list[dict[str, Any]]:
        options = request.options
        upload = self.settings.oss_enabled if options.output_oss is None else options.output_oss
        store = ObjectStore.from_settings(self.settings, context.headers) if upload else None
        return deliver_outputs(
            items, self.reader, store=store, key_prefix=self.settings.oss_prefix,
            task_id=context.task_id, inline=options.output_base64,
            inline_cap=self.settings.base64_max_bytes,
        )

    def _notify(
        self, request: RunRequest, context: RequestContext, recorder: TaskRecorder, body: bytes
    ) -> None:
        if request.webhook_url is None:
            return
        outcome = webhook.deliver(
            request.webhook_url, body, secret=self.settings.webhook_secret,
            task_id=context.task_id, attempts=self.settings.webhook_attempts,
            backoff_s=self.settings.webhook_backoff_s,
        )
        recorder.update(webhook=outcome)

    def _task_store_or_none(self, headers: Mapping[str, str]) -> TaskStore | None:
        if not self.settings.oss_enabled:
            return None
        store = ObjectStore.from_settings(self.settings, headers)
        return TaskStore(store, self.settings.oss_prefix)


def _no_outputs_error(prompt_id: str, output_temp: bool) -> FunartError:
    hint = ("Add a node that saves its result, such as SaveImage."
            if output_temp else
            "Preview nodes write temp files, which are left out unless output_temp=true; "
            "add a save node such as SaveImage, or call with output_temp=true.")
    return FunartError(
        f"The job finished but produced no outputs. {hint}",
        code="NO_OUTPUTS", status=422, details={"prompt_id": prompt_id},
    )
