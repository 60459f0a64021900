"""FC entry point of the workspace function: ``/api/workspace/*`` plus the ComfyUI UI.

Every path that is not a lifecycle or workspace route goes to ComfyUI through the
reverse proxy, so the ComfyUI UI works through the function's URL.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from funart_runtime.errors import BadRequestError
from funart_runtime.models import model_target
from funart_runtime.proxy import ComfyProxy
from funart_runtime.server import build_app, json_object, run_blocking
from funart_runtime.settings import Settings
from funart_runtime.workspace_service import WorkspaceService

SERVICE_KEY = web.AppKey("workspace_service", WorkspaceService)
PROXY_KEY = web.AppKey("comfy_proxy", ComfyProxy)
_ARCHIVE_TYPES = {"application/zip", "application/gzip", "application/x-gzip",
                  "application/x-tar", "application/octet-stream"}
_END = object()


def create_app(settings: Settings, service: WorkspaceService | None = None) -> web.Application:
    service = service or WorkspaceService(settings)
    app = build_app(service, worker_threads=8, max_body_bytes=settings.max_body_bytes)
    app[SERVICE_KEY] = service
    app[PROXY_KEY] = ComfyProxy(settings.comfyui_url,
                                lambda: service.process.current_state == "ready")
    app.router.add_get("/api/workspace/status", status)
    app.router.add_get("/api/workspace/snapshots", list_snapshots)
    app.router.add_post("/api/workspace/snapshots", save_snapshot)
    app.router.add_post("/api/workspace/nodes", install_node)
    app.router.add_post("/api/workspace/models", download_model)
    app.router.add_put("/api/workspace/models/{folder}/{filename}", upload_model)
    app.router.add_post("/api/workspace/restart", restart)
    app.router.add_route("*", "/{tail:.*}", proxy)
    app.on_cleanup.append(_shutdown)
    return app


async def status(request: web.Request) -> web.Response:
    return web.json_response(await run_blocking(request, request.app[SERVICE_KEY].status))


async def list_snapshots(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response({"snapshots": await run_blocking(request, service.list_snapshots)})


async def save_snapshot(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(request, service.save_snapshot), status=201)


async def install_node(request: web.Request) -> web.Response:
    """Install a custom node: JSON ``{url, ref?, name?}``, or an archive body with ``?name=``."""
    service = request.app[SERVICE_KEY]
    if request.content_type in _ARCHIVE_TYPES:
        name = request.query.get("name")
        if not name:
            raise BadRequestError("An archive upload needs ?name=<custom node folder name>.",
                                  code="INVALID_PARAMETER")
        data = await request.read()
        result = await run_blocking(request, service.install_archive_node, data, name)
    else:
        body = await json_object(request)
        url = body.get("url")
        if not isinstance(url, str):
            raise BadRequestError('Missing url: send {"url": "https://github.com/…", '
                                  '"ref": "<branch, tag or commit>"}.', code="INVALID_PARAMETER")
        result = await run_blocking(request, service.install_git_node, url, body.get("ref"),
                                    body.get("name"))
    return web.json_response(result, status=201)


async def download_model(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await json_object(request)
    return web.json_response(await run_blocking(request, service.download_model, body),
                             status=201)


async def upload_model(request: web.Request) -> web.Response:
    """Stream the request body to ``models/<folder>/<filename>`` on NAS."""
    service = request.app[SERVICE_KEY]
    folder, filename = request.match_info["folder"], request.match_info["filename"]
    model_target(service.dirs.models, folder, filename)  # reject a bad path before reading
    chunks: queue.Queue[Any] = queue.Queue(maxsize=8)
    saving = asyncio.ensure_future(run_blocking(
        request, service.upload_model, folder, filename, request.query.get("sha256"),
        _drain(chunks),
    ))
    async for chunk in request.content.iter_chunked(1024 * 1024):
        if not await _offer(chunks, chunk, saving):
            break
    await _offer(chunks, _END, saving)
    return web.json_response(await saving, status=201)


async def _offer(chunks: queue.Queue[Any], item: Any, consumer: asyncio.Future[Any]) -> bool:
    # Non-blocking hand-over: a writer thread that failed stops the upload, not the loop.
    while not consumer.done():
        try:
            chunks.put_nowait(item)
            return True
        except queue.Full:
            await asyncio.sleep(0.005)
    return False


async def restart(request: web.Request) -> web.Response:
    return web.json_response(await run_blocking(request, request.app[SERVICE_KEY].restart))


async def proxy(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY_KEY].handle(request)


def _drain(chunks: queue.Queue[Any]) -> Iterator[bytes]:
    while (chunk := chunks.get()) is not _END:
        yield chunk



async def _shutdown(app: web.Application) -> None:
    await app[PROXY_KEY].close()
    app[SERVICE_KEY].process.stop()
