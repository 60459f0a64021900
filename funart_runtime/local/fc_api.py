"""A local FC 3.0 control API: the subset the control function and ``funart call`` use.

The real ``alibabacloud-fc20230330`` SDK talks to it over loopback (endpoint
``127.0.0.1:<port>``, protocol http). Functions, their async and scaling
configuration and async tasks live in memory. Invocations go to the local instance
that the ``instance_url`` hook returns. Async ones get 202 at once, as on FC, and are
delivered in the background with FC's headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

PREFIX = "/2023-03-30/functions"
RecycleHook = Callable[[str], Awaitable[None]]
# Returns the URL of a running instance of the function, starting one if needed.
InstanceHook = Callable[[str], Awaitable[str]]


def _error(status: int, code: str, message: str) -> web.Response:
    request_id = uuid.uuid4().hex
    body = {"Code": code, "Message": message, "RequestId": request_id,
            "code": code, "message": message, "requestId": request_id}
    return web.json_response(body, status=status, headers={"x-fc-request-id": request_id})


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalFcApi:
    """In-memory functions and async tasks behind the FC 3.0 REST paths."""

    def __init__(
        self,
        on_update: RecycleHook | None = None,
        instance_url: InstanceHook | None = None,
    ) -> None:
        self.functions: dict[str, dict[str, Any]] = {}
        self.async_configs: dict[str, dict[str, Any]] = {}
        self.scaling_configs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, dict[str, Any]]] = {}
        self.updates: list[str] = []
        self.on_update = on_update
        self.instance_url = instance_url

    def app(self) -> web.Application:
        app = web.Application()
        routes = [
            ("GET", PREFIX + "/{name}", self.get_function),
            ("POST", PREFIX, self.create_function),
            ("PUT", PREFIX + "/{name}", self.update_function),
            ("PUT", PREFIX + "/{name}/async-invoke-config", self.put_async_config),
            ("PUT", PREFIX + "/{name}/scaling-config", self.put_scaling_config),
            ("POST", PREFIX + "/{name}/invocations", self.invoke),
            ("GET", PREFIX + "/{name}/async-tasks", self.list_tasks),
            ("GET", PREFIX + "/{name}/async-tasks/{task_id}", self.get_task),
            ("PUT", PREFIX + "/{name}/async-tasks/{task_id}/stop", self.stop_task),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    # ---- functions --------------------------------------------------------------------

    async def get_function(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.functions:
            return _error(404, "FunctionNotFound", f"function '{name}' does not exist")
        return web.json_response(self.functions[name])

    async def create_function(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("functionName")
        if not name:
            return _error(400, "InvalidArgument", "functionName is required")
        if name in self.functions:
            return _error(409, "FunctionAlreadyExists", f"function '{name}' already exists")
        self.functions[name] = {
            **body, "functionArn": f"acs:fc:local:0:functions/{name}",
            "createdTime": _now_ms(), "lastModifiedTime": _now_ms(), "state": "Active",
        }
        return web.json_response(self.functions[name])

    async def update_function(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.functions:
            return _error(404, "FunctionNotFound", f"function '{name}' does not exist")
        body = await request.json()
        self.functions[name].update(body)
        self.functions[name]["lastModifiedTime"] = _now_ms()
        self.updates.append(name)
        # As on FC, a changed function gets new instances for the next requests.
        if self.on_update is not None:
            await self.on_update(name)
        return web.json_response(self.functions[name])

    async def put_async_config(self, request: web.Request) -> web.Response:
        return await self._put_config(request, self.async_configs)

    async def put_scaling_config(self, request: web.Request) -> web.Response:
        return await self._put_config(request, self.scaling_configs)

    async def _put_config(self, request: web.Request,
                          store: dict[str, dict[str, Any]]) -> web.Response:
        name = request.match_info["name"]
        if name not in self.functions:
            return _error(404, "FunctionNotFound", f"function '{name}' does not exist")
        store[name] = await request.json()
        arn = self.functions[name]["functionArn"]
        return web.json_response({**store[name], "functionArn": arn})

    # ---- invocations and async tasks --------------------------------------------------

    async def invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.functions:
            return _error(404, "FunctionNotFound", f"function '{name}' does not exist")
        body = await request.read()
        if request.headers.get("x-fc-invocation-type", "").lower() == "async":
            return self._enqueue(name, request.headers.get("x-fc-async-task-id"), body)
        return await self._deliver(name, body, {})

    def _enqueue(self, name: str, task_id: str | None, body: bytes) -> web.Response:
        task_id = task_id or uuid.uuid4().hex
        tasks = self.tasks.setdefault(name, {})
        if task_id in tasks:
            return _error(409, "AsyncTaskAlreadyExist", f"async task '{task_id}' already exists")
        tasks[task_id] = {"taskId": task_id, "status": "Enqueued", "startedTime": _now_ms(),
                          "functionArn": self.functions[name]["functionArn"],
                          "taskPayload": body.decode("utf-8", "replace")[:4096],
                          "events": [{"status": "Enqueued", "timestamp": _now_ms()}]}
        asyncio.ensure_future(self._run_task(name, task_id, body))
        return web.Response(status=202, headers={"x-fc-async-task-id": task_id})

    async def _run_task(self, name: str, task_id: str, body: bytes) -> None:
        task = self.tasks[name][task_id]
        if task["status"] == "Stopped":
            return
        task["status"] = "Running"
        headers = {"x-fc-invocation-type": "Async", "x-fc-async-task-id": task_id}
        response = await self._deliver(name, body, headers)
        if task["status"] != "Stopped":
            failed = response.status >= 400 or response.headers.get("x-fc-status") == "404"
            task["status"] = "Failed" if failed else "Succeeded"
            task["returnPayload"] = (response.body or b"").decode("utf-8", "replace")[:4096]
        task["endTime"] = _now_ms()
        task["durationMs"] = task["endTime"] - task["startedTime"]
        task["events"].append({"status": task["status"], "timestamp": _now_ms()})

    async def _deliver(self, name: str, body: bytes, headers: dict[str, str]) -> web.Response:
        url = await self.instance_url(name) if self.instance_url is not None else None
        if url is None:
            return _error(503, "FunctionNotStarted", f"no local instance of '{name}'")
        request_id = uuid.uuid4().hex
        timeout = aiohttp.ClientTimeout(total=self.functions[name].get("timeout", 600))
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            url + "/invoke", data=body,
            headers={**headers, "x-fc-request-id": request_id,
                     "content-type": "application/octet-stream"},
        ) as response:
            payload = await response.read()
            status = response.headers.get("x-fc-status", "200")
        result = web.Response(body=payload, status=200,
                              headers={"x-fc-request-id": request_id, "x-fc-status": status})
        if status != "200":
            result.headers["x-fc-error-type"] = "UnhandledInvocationError"
        return result

    async def get_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["name"], {}).get(request.match_info["task_id"])
        if task is None:
            return _error(404, "AsyncTaskNotFound", "async task does not exist")
        return web.json_response(task)

    async def list_tasks(self, request: web.Request) -> web.Response:
        tasks = list(self.tasks.get(request.match_info["name"], {}).values())
        status = request.query.get("status")
        if status:
            tasks = [task for task in tasks if task["status"] == status]
        limit = int(request.query.get("limit", "20"))
        return web.json_response({"tasks": tasks[:limit]})

    async def stop_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["name"], {}).get(request.match_info["task_id"])
        if task is None:
            return _error(404, "AsyncTaskNotFound", "async task does not exist")
        # NOTE: only the task's record changes; a delivery already running on the local
        # instance goes on (cancel it through the api function's own cancel route).
        task["status"] = "Stopped"
        task["events"].append({"status": "Stopped", "timestamp": _now_ms()})
        return web.Response(status=200)

