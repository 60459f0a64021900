"""The control function's work: publish snapshots as API versions, roll back, clean up.

Publishing copies a workspace snapshot's manifest to an immutable ``api-<UTC time>``
version (no data is copied) and points the api function's FUNART_SNAPSHOT at it
through the FC 3.0 API; FC then starts new instances, which restore that version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from . import sls_client
from .errors import BadRequestError, FunartError, TaskConflictError, TaskNotFoundError
from .fc_client import FcClient
from .settings import Settings
from .snapshots.store import SnapshotStore
from .storage import Credentials, ObjectStore
from .tasks import TaskStore, check_task_id
from .workspace_service import DEV_PREFIX

logger = logging.getLogger(__name__)

VERSION_PREFIX = "api-"
# Settings that describe the workspace only; a new api function does not inherit them.
_WORKSPACE_ONLY = {"FUNART_BASE_MANIFEST", "FUNART_GITHUB_MIRROR", "FUNART_PIP_INDEX_URL",
                   "FUNART_SNAPSHOT_TIMEOUT_S"}
# Parts of the workspace's configuration a new api function copies.
_INHERITED = ("role", "vpcConfig", "nasConfig", "ossMountConfig", "logConfig", "gpuConfig",
              "cpu", "memorySize", "diskSize", "timeout", "internetAccess", "layers")
_SPEC_FIELDS = {"cpu", "memorySize", "instanceConcurrency", "timeout", "diskSize"}
GC_GRACE_S = 3600.0


def version_name() -> str:
    return VERSION_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class ControlService:
    """Versions of the api function, kept in the snapshot store and in FC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SnapshotStore.from_settings(settings)

    def initialize(self) -> dict[str, Any]:
        return {"control": "ready"}

    def pre_stop(self) -> dict[str, Any]:
        return {"control": "stopped"}

    def health(self) -> dict[str, Any]:
        return {"ready": True, "role": "control", "api_function": self.settings.api_function}

    # ---- publish and versions ------------------------------------------------------

    def publish(self, request: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """Copy a snapshot to a new version and deploy it on the api function."""
        snapshot = request.get("snapshot") or self.store.latest(DEV_PREFIX)
        if not snapshot:
            raise TaskNotFoundError(
                "There is no workspace snapshot to publish yet: stop the workspace or call "
                "POST /api/workspace/snapshots first.", code="SNAPSHOT_NOT_FOUND")
        function = str(request.get("function") or self.settings.api_function)
        spec = _spec(request.get("spec") or {})
        fc = self._fc(headers)

        current = fc.get_function(function)
        template = None if current is not None else self._workspace_template(fc, function)
        version = version_name()
        self.store.copy(str(snapshot), version)
        try:
            if current is not None:
                env = {**(current.get("environmentVariables") or {}), "FUNART_SNAPSHOT": version}
                update = {**_merge_gpu(current, spec), "environmentVariables": env}
                fc.update_function(function, update)
            else:
                assert template is not None
                fc.create_function(_new_api_function(template, function, version, spec))
        except FunartError:
            # The function still runs its previous version; drop the unused copy.
            self.store.delete(version)
            raise
        self._configure(fc, function, request)
        logger.info("Published %s as %s on %s", snapshot, version, function)
        return {"version": version, "snapshot": snapshot, "function": function,
                "created": current is None}

    def versions(self, headers: Mapping[str, str]) -> dict[str, Any]:
        live = self._live_version(self._fc(headers))
        versions = [
            {**info.as_dict(), "live": info.name == live}
            for info in self.store.list() if info.name.startswith(VERSION_PREFIX)
        ]
        return {"function": self.settings.api_function, "live": live, "versions": versions}

    def rollback(self, version: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
        version = self._existing_version(version)
        fc = self._fc(headers)
        current = fc.get_function(self.settings.api_function)
        if current is None:
            raise TaskNotFoundError(
                f"The api function {self.settings.api_function!r} does not exist; publish first.",
                code="FUNCTION_NOT_FOUND")
        env = {**(current.get("environmentVariables") or {}), "FUNART_SNAPSHOT": version}
        fc.update_function(self.settings.api_function, {"environmentVariables": env})
        return {"function": self.settings.api_function, "live": version}

    def delete_version(self, version: str, headers: Mapping[str, str]) -> dict[str, Any]:
        version = self._existing_version(version)
        if version == self._live_version(self._fc(headers)):
            raise TaskConflictError(
                f"Version {version} is live on {self.settings.api_function}; roll back to "
                "another version before deleting it.", code="VERSION_LIVE")
        self.store.delete(version)
        report = self.store.gc(GC_GRACE_S)
        return {"deleted": version, "gc": report.as_dict()}

    # ---- tasks ---------------------------------------------------------------------

    def task(self, task_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """Merge FC's view of an async task with the task's status document in OSS."""
        task_id = check_task_id(task_id)
        fc_task = self._fc(headers).get_async_task(self.settings.api_function, task_id)
        document = None
        if self.settings.oss_enabled:
            credentials = Credentials.resolve(headers, self.settings)
            if credentials is not None:
                store = ObjectStore(self.settings.oss_endpoint, self.settings.oss_bucket,
                                    credentials, url_expires_s=self.settings.oss_url_expires_s)
                document = TaskStore(store, self.settings.oss_prefix).read(task_id)
        if fc_task is None and document is None:
            raise TaskNotFoundError(f"No task {task_id!r} on {self.settings.api_function}.",
                                    details={"task_id": task_id})
        status = document["status"] if document else _fc_status(fc_task)
        return {"task_id": task_id, "status": status, "fc": fc_task, "document": document}

    # ---- logs ----------------------------------------------------------------------

    def logs(self, query: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, Any]:
        """Query a function's logs in SLS by time range, request id, task id or text."""
        settings = self.settings
        if not settings.sls_project or not settings.sls_logstore:
            raise BadRequestError(
                "Logs need FUNART_SLS_PROJECT and FUNART_SLS_LOGSTORE: the project and logstore "
                "of the functions' logConfig.", code="SLS_NOT_CONFIGURED")
        credentials = Credentials.resolve(headers, settings)
        if credentials is None:
            raise FunartError("No credentials for SLS: give the control function a role.",
                              code="SLS_CREDENTIALS_MISSING")

        now = int(time.time())
        to_time = _int_param(query, "to", now, minimum=0)
        from_time = _int_param(query, "from", to_time - 3600, minimum=0)
        limit = _int_param(query, "limit", 100, minimum=1, maximum=1000)
        if from_time > to_time:
            raise BadRequestError(f"from ({from_time}) is after to ({to_time}).",
                                  code="INVALID_PARAMETER")
        function = query.get("function") or settings.api_function
        search = sls_client.build_query(function, query.get("request_id"),
                                        query.get("task_id"), query.get("q"))
        endpoint = settings.sls_endpoint or f"{settings.region}.log.aliyuncs.com"
        records = sls_client.query_logs(
            endpoint, settings.sls_project, settings.sls_logstore, credentials, query=search,
            from_time=from_time, to_time=to_time, limit=limit)
        return {"function": function, "query": search, "from": from_time, "to": to_time,
                "logs": records}

    # ---- helpers -------------------------------------------------------------------

    def _workspace_template(self, fc: FcClient, function: str) -> dict[str, Any]:
        template = fc.get_function(self.settings.workspace_function)
        if template is None:
            raise TaskNotFoundError(
                f"Neither {function!r} nor the workspace function "
                f"{self.settings.workspace_function!r} exists, so there is nothing to copy the "
                "configuration from. Deploy with `s deploy` first.", code="FUNCTION_NOT_FOUND")
        return template

    def _configure(self, fc: FcClient, function: str, request: Mapping[str, Any]) -> None:
        async_task = request.get("async", True)
        if not isinstance(async_task, bool):
            raise BadRequestError(f"Invalid async {async_task!r}: use true or false.",
                                  code="INVALID_PARAMETER")
        fc.put_async_invoke_config(function, {"asyncTask": async_task})
        scaling = request.get("scaling")
        # Scaling config only: FC rejects it together with a provision config.
        if scaling is not None:
            if not isinstance(scaling, dict):
                raise BadRequestError("scaling must be an object such as {\"minInstances\": 1}.",
                                      code="INVALID_PARAMETER")
            fc.put_scaling_config(function, scaling)

    def _live_version(self, fc: FcClient) -> str | None:
        current = fc.get_function(self.settings.api_function)
        if current is None:
            return None
        return (current.get("environmentVariables") or {}).get("FUNART_SNAPSHOT") or None

    def _existing_version(self, version: str | None) -> str:
        if not version or not version.startswith(VERSION_PREFIX):
            raise BadRequestError(
                f"Invalid version {version!r}: use a name from GET /api/versions, such as "
                "api-20261204T201530000000Z.", code="INVALID_VERSION")
        if version not in {info.name for info in self.store.list()}:
            raise TaskNotFoundError(f"Version {version} does not exist.",
                                    code="VERSION_NOT_FOUND")
        return version

    def _fc(self, headers: Mapping[str, str]) -> FcClient:
        credentials = Credentials.resolve(headers, self.settings)
        if credentials is None:
            raise FunartError(
                "No credentials for the FC API: give the control function a role, or set "
                "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET.",
                code="FC_CREDENTIALS_MISSING")
        return FcClient(self.settings.fc_endpoint_url, self.settings.region, credentials)


def _new_api_function(template: dict[str, Any], function: str, version: str,
                      spec: dict[str, Any]) -> dict[str, Any]:
    """Build the api function from the workspace's role, network, storage and image."""
    env = {key: value for key, value in (template.get("environmentVariables") or {}).items()
           if key not in _WORKSPACE_ONLY}
    container = dict(template.get("customContainerConfig") or {})
    container["command"] = ["funart", "serve", "api"]
    body = {key: template[key] for key in _INHERITED if template.get(key) is not None}
    return {
        **body, **_merge_gpu(template, spec), "functionName": function,
        "runtime": "custom-container",
        "customContainerConfig": container,
        "environmentVariables": {**env, "FUNART_SNAPSHOT": version},
        "instanceLifecycleConfig": template.get("instanceLifecycleConfig"),
    }


def _int_param(query: Mapping[str, str], name: str, default: int, *, minimum: int,
               maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise BadRequestError(f"Invalid {name} {raw!r}: use an integer from {minimum}{upper} "
                              "(times are Unix seconds).", code="INVALID_PARAMETER",
                              details={"parameter": name, "value": raw})
    return value


def _merge_gpu(function: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    # A spec may change the GPU memory alone; the GPU type stays what the function has.
    if "gpuConfig" not in spec:
        return spec
    merged = {**(function.get("gpuConfig") or {}), **spec["gpuConfig"]}
    return {**spec, "gpuConfig": merged}


def _spec(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequestError("spec must be an object.", code="INVALID_PARAMETER")
    unknown = set(raw) - _SPEC_FIELDS - {"gpuType", "gpuMemorySize"}
    if unknown:
        raise BadRequestError(
            f"Unknown spec field(s) {sorted(unknown)}: use gpuType, gpuMemorySize, cpu, "
            "memorySize, instanceConcurrency, timeout or diskSize.", code="INVALID_PARAMETER")
    spec = {key: raw[key] for key in _SPEC_FIELDS if key in raw}
    if "gpuType" in raw or "gpuMemorySize" in raw:
        spec["gpuConfig"] = {key: raw[key] for key in ("gpuType", "gpuMemorySize") if key in raw}
    return spec


def _fc_status(task: dict[str, Any] | None) -> str:
    mapping = {"Succeeded": "succeeded", "Failed": "failed", "Stopped": "cancelled",
               "Running": "running", "Enqueued": "queued"}
    return mapping.get(str((task or {}).get("status")), str((task or {}).get("status")).lower())
