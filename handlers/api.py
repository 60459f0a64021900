"""FC entry point of the api function: HTTP in, ``ApiService`` calls, JSON or SSE out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from funart_runtime.api_service import ApiService, RequestContext
from funart_runtime.errors import FunartError
from funart_runtime.server import (
    build_app,
    error_response,
    lower_headers,
    request_id,
    run_blocking,
    task_id,
)
from funart_runtime.settings import Settings
from funart_runtime.workflow import RunRequest, parse_run_request

logger = logging.getLogger(__name__)
SERVICE_KEY = web.AppKey("api_service", ApiService)


def create_app(settings: Settings, service: ApiService | None = None) -> web.Application:
    service = service or ApiService(settings)
    # One thread per admitted job, plus a few for hooks and status calls.
    app = build_app(
        service, worker_threads=settings.max_jobs + 8, max_body_bytes=settings.max_body_bytes
    )
    app[SERVICE_KEY] = service
    app.router.add_post("/api/serverless/run", run)
    app.router.add_get("/api/serverless/status", status)
    app.router.add_post("/api/serverless/cancel", cancel)
    app.router.add_post("/invoke", invoke)
    app.on_cleanup.append(_stop_comfyui)
    return app


async def run(request: web.Request) -> web.StreamResponse:
    """``POST /api/serverless/run``: run a workflow; ``?stream=true`` streams progress."""
    run_request, context = await _parse(request)
    if run_request.options.stream:
        return await _stream(request, run_request, context)
    service = request.app[SERVICE_KEY]
    return web.json_response(await run_blocking(request, service.run, run_request, context))


async def invoke(request: web.Request) -> web.Response:
    """``POST /invoke``: the same job as an FC event call; ``x-fc-status`` reports failure."""
    try:
        run_request, context = await _parse(request)
        result = await run_blocking(request, request.app[SERVICE_KEY].run, run_request, context)
    except FunartError as exc:
        response = error_response(exc, request)
        response.headers["x-fc-status"] = "404"
        return response
    response = web.json_response(result)
    response.headers["x-fc-status"] = "200"
    return response


async def status(request: web.Request) -> web.Response:
    """``GET /api/serverless/status?task_id=``: the task's status document."""
    service = request.app[SERVICE_KEY]
    document = await run_blocking(
        request, service.status, request.query.get("task_id"), lower_headers(request)
    )
    return web.json_response(document)


async def cancel(request: web.Request) -> web.Response:
    """``POST /api/serverless/cancel?task_id=``: interrupt or dequeue the task's job."""
    service = request.app[SERVICE_KEY]
    code, document = await run_blocking(
        request, service.cancel, request.query.get("task_id"), lower_headers(request)
    )
    return web.json_response(document, status=code)


async def _parse(request: web.Request) -> tuple[RunRequest, RequestContext]:
    run_request = parse_run_request(await request.read(), request.query)
    invocation = request.headers.get("x-fc-invocation-type", "")
    context = RequestContext(
        request_id=request_id(request),
        task_id=task_id(request),
        headers=lower_headers(request),
        is_async=invocation.lower() == "async",
    )
    return run_request, context


async def _stream(
    request: web.Request, run_request: RunRequest, context: RequestContext
) -> web.StreamResponse:
    """Send the job's progress as Server-Sent Events; the result is the last event.

    A client that disconnects only stops the events: the job runs to its end.
    """
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_stream(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    service = request.app[SERVICE_KEY]
    job = asyncio.ensure_future(
        run_blocking(request, service.run, run_request, context, on_stream)
    )
    connected = True
    while not job.done() or not events.empty():
        waiter = asyncio.ensure_future(events.get())
        await asyncio.wait({waiter, job}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            continue
        event = waiter.result()
        connected = connected and await _send(response, event.pop("event"), event)

    try:
        final_name, final = "result", job.result()
    except FunartError as exc:
        final_name, final = "error", exc.to_body(context.request_id)
    if connected:
        await _send(response, final_name, final)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    return response


async def _send(response: web.StreamResponse, name: str, data: dict[str, Any]) -> bool:
    try:
        await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
    except ConnectionError:
        logger.info("Stream client disconnected; the job goes on")
        return False
    return True



async def _stop_comfyui(app: web.Application) -> None:
    # Server shutdown (SIGTERM, Ctrl-C) stops ComfyUI too, even without /pre-stop.
    app[SERVICE_KEY].process.stop()
