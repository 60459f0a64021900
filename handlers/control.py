"""FC entry point of the control function: publish, versions, rollback, tasks."""

from __future__ import annotations

from aiohttp import web

from funart_runtime.control_service import ControlService
from funart_runtime.server import build_app, json_object, lower_headers, run_blocking
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
    body = await json_object(request)
    service = request.app[SERVICE_KEY]
    result = await run_blocking(request, service.publish, body, lower_headers(request))
    return web.json_response(result, status=201)


async def versions(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(request, service.versions, lower_headers(request)))


async def rollback(request: web.Request) -> web.Response:
    body = await json_object(request)
    service = request.app[SERVICE_KEY]
    return web.json_response(
        await run_blocking(request, service.rollback, body.get("version"), lower_headers(request)))


async def delete_version(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.delete_version, request.match_info["version"], lower_headers(request)))


async def task(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.task, request.match_info["task_id"], lower_headers(request)))


async def logs(request: web.Request) -> web.Response:
    """``GET /api/logs?function=&from=&to=&request_id=&task_id=&q=&limit=``."""
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(
        request, service.logs, dict(request.query), lower_headers(request)))


