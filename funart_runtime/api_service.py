"""The api function's work: run one workflow on the local ComfyUI and deliver its outputs."""

from __future__ import annotations

import base64
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy.client import ComfyClient
from .comfy.process import ComfyDirs, ComfyProcess
from .comfy.protocol import raise_for_history_failure
from .errors import FunartError, NotReadyError, OutputTooLargeError
from .logs import task_id_var
from .outputs import OutputItem, collect_outputs, content_type, object_key
from .settings import Settings
from .storage import ObjectStore
from .workflow import RunRequest, isolate_outputs, job_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """What the runtime knows of the caller: the FC ids and headers."""

    request_id: str
    task_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiService:
    """Lifecycle and jobs of one api instance."""

    def __init__(self, settings: Settings, process: ComfyProcess | None = None) -> None:
        self.settings = settings
        self.dirs = ComfyDirs.for_api(settings)
        self.process = process or ComfyProcess(settings, self.dirs)
        self._running = 0
        self._idle = threading.Condition()
        self._draining = False

    # ---- lifecycle ------------------------------------------------------------

    def initialize(self) -> dict[str, Any]:
        """Start ComfyUI (the FC Initializer hook); return when it answers."""
        # NOTE: FUNART_SNAPSHOT is not restored yet; the environment on disk runs as it is.
        self._draining = False
        self.process.start()
        return {"comfyui": "ready", "pid": self.process.pid}

    def pre_stop(self) -> dict[str, Any]:
        """Stop taking jobs, let running ones finish (bounded), then stop ComfyUI."""
        self._draining = True
        deadline = time.monotonic() + self.settings.prestop_timeout_s
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = self._running
        if left:
            logger.warning("Pre-stop timed out with %s job(s) still running", left)
        self.process.stop()
        return {"comfyui": "stopped", "unfinished_jobs": left}

    def health(self) -> dict[str, Any]:
        return {
            "comfyui": self.process.state,
            "comfyui_pid": self.process.pid,
            "running_jobs": self._running,
            "draining": self._draining,
        }

    # ---- one job --------------------------------------------------------------

    def run(self, request: RunRequest, context: RequestContext) -> dict[str, Any]:
        """Run ``request`` and return FunArt's result document; raise FunartError on failure."""
        if self._draining:
            raise NotReadyError("The instance is shutting down; send the request again.")
        if request.options.output_oss and not self.settings.oss_enabled:
            raise FunartError(
                "output_oss=true, but no bucket is configured. Set FUNART_OSS_ENDPOINT and "
                "FUNART_OSS_BUCKET, or call with output_oss=false and output_base64=true.",
                code="OSS_NOT_CONFIGURED", status=400,
            )
        task_id_var.set(context.task_id)
        self._job_started()
        job_id = uuid.uuid4().hex
        try:
            return self._run(request, context, job_id)
        finally:
            self._remove_job_files(job_id)
            self._job_finished()

    def _run(self, request: RunRequest, context: RequestContext, job_id: str) -> dict[str, Any]:
        generation = self.process.ensure_ready()
        client = ComfyClient(
            self.settings.comfyui_url,
            liveness=lambda: self.process.check_alive(generation),
        )

        workflow = isolate_outputs(request.workflow, job_id)
        job = client.run(workflow, deadline_s=self.settings.job_timeout_s)
        raise_for_history_failure(job.history)

        items = collect_outputs(job.history, include_temp=request.options.output_temp)
        results = self._deliver(items, request, context)
        logger.info("Job succeeded: %s output(s) in %.2f s", len(results), job.execution_time)
        return {
            "type": "serverless_api",
            "data": {
                "prompt_id": job.prompt_id,
                "task_id": context.task_id,
                "execution_time": round(job.execution_time, 3),
                "results": results,
            },
        }

    def _deliver(
        self, items: list[OutputItem], request: RunRequest, context: RequestContext
    ) -> list[dict[str, Any]]:
        options = request.options
        upload = self.settings.oss_enabled if options.output_oss is None else options.output_oss
        store = ObjectStore.from_settings(self.settings, context.headers) if upload else None

        results = []
        inlined = 0
        cap = self.settings.base64_max_bytes
        for item in items:
            entry = _result_entry(item)
            if item.is_file:
                data = self._read_output(item)
                if store is not None:
                    entry["output"]["oss"] = _upload(store, self.settings, context, item, data)
                if options.output_base64:
                    inlined += len(data)
                    if inlined <= cap:
                        entry["output"]["base64"]["content"] = base64.b64encode(data).decode()
            results.append(entry)

        if inlined > cap:
            raise _too_large_error(inlined, cap, results, store)
        return results

    def _read_output(self, item: OutputItem) -> bytes:
        roots = {"output": self.dirs.output, "temp": self.dirs.temp, "input": self.dirs.input}
        root = roots.get(item.folder_type, self.dirs.output).resolve()
        assert item.filename is not None
        path = (root / item.subfolder / item.filename).resolve()
        if not path.is_relative_to(root):
            raise FunartError(
                f"ComfyUI reported an output outside its {item.folder_type} folder: {path}.",
                code="OUTPUT_PATH_INVALID",
            )
        return path.read_bytes()

    def _remove_job_files(self, job_id: str) -> None:
        folder: Path = self.dirs.output / job_folder(job_id)
        shutil.rmtree(folder, ignore_errors=True)

    def _job_started(self) -> None:
        with self._idle:
            self._running += 1

    def _job_finished(self) -> None:
        with self._idle:
            self._running -= 1
            self._idle.notify_all()


def _result_entry(item: OutputItem) -> dict[str, Any]:
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
    store: ObjectStore,
    settings: Settings,
    context: RequestContext,
    item: OutputItem,
    data: bytes,
) -> dict[str, Any]:
    assert item.filename is not None
    key = object_key(settings.oss_prefix, context.task_id, item)
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
