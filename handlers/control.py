"""FC entry point of the control function: publish, versions, rollback, tasks."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from funart_runtime.control_service import ControlService
from funart_runtime.errors import BadRequestError
from funart_runtime.server import build_app, run_blocking
from funart_runtime.settings import Settings

SERVICE_KEY = web.AppKey("control_service", ControlService)


def create_app(settings: Settings, service: ControlService | None = None) -> web.Application:
    service = service or ControlService(settings)
    app = build_app(service, worker_threads=8, max_body_bytes=1024 * 1024)
    app[SERVICE_KEY] = service
    app.router.add_post("/api/publish", publish)
    app.router.add_get("/api/versions", versions)
    app.router.add_post("/api/rollback", rollback)
    app.router.add_delete("/api/versions/{version}", delete_version)
    app.router.add_get("/api/tasks/{task_id}", task)
    app.router.add_get("/api/logs", logs)
    return app


async def publish(request: web.Request) -> web.Response:
    body = await _json_object(request)
    service = request.app[SERVICE_KEY]
    result = await run_blocking(request, service.publish, body, _headers(request))
    return web.json_response(result, status=201)


async def versions(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(request, service.versions, _headers(request)))


async def rollback(request: web.Request) -> web.Response:
    body = await _json_object(request)
    service = request.app[SERVICE_KEY]
    return web.json_response(
        await run_blocking(request, service.rollback, body.get("version"), _headers(request)))


async def delete_version(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.delete_version, request.match_info["version"], _headers(request)))


async def task(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.task, request.match_info["task_id"], _headers(request)))


async def logs(request: web.Request) -> web.Response:
    """``GET /api/logs?function=&from=&to=&request_id=&task_id=&q=&limit=``."""
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.logs, dict(request.query), _headers(request)))


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}.",
                              code="INVALID_JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.", code="INVALID_JSON")
    return body


def _headers(request: web.Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}
