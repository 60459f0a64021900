"""FC entry point of the api function: HTTP in, ``ApiService`` calls, JSON out."""

from __future__ import annotations

from aiohttp import web

from funart_runtime.api_service import ApiService, RequestContext
from funart_runtime.errors import FunartError
from funart_runtime.server import build_app, error_response, request_id, run_blocking, task_id
from funart_runtime.settings import Settings
from funart_runtime.workflow import parse_run_request

SERVICE_KEY = web.AppKey("api_service", ApiService)


def create_app(settings: Settings, service: ApiService | None = None) -> web.Application:
    service = service or ApiService(settings)
    app = build_app(service)
    app[SERVICE_KEY] = service
    app.router.add_post("/api/serverless/run", run)
    app.router.add_post("/invoke", invoke)
    app.on_cleanup.append(_stop_comfyui)
    return app


async def _stop_comfyui(app: web.Application) -> None:
    # Server shutdown (SIGTERM, Ctrl-C) stops ComfyUI too, even without /pre-stop.
    app[SERVICE_KEY].process.stop()


async def run(request: web.Request) -> web.Response:
    """``POST /api/serverless/run``: run a workflow and return its outputs."""
    return web.json_response(await _run(request))


async def invoke(request: web.Request) -> web.Response:
    """``POST /invoke``: the same job as an FC event call; ``x-fc-status`` reports failure."""
    try:
        result = await _run(request)
    except FunartError as exc:
        response = error_response(exc, request)
        response.headers["x-fc-status"] = "404"
        return response
    response = web.json_response(result)
    response.headers["x-fc-status"] = "200"
    return response


async def _run(request: web.Request) -> dict:
    body = await request.read()
    run_request = parse_run_request(body, request.query)
    context = RequestContext(
        request_id=request_id(request),
        task_id=task_id(request),
        headers={name.lower(): value for name, value in request.headers.items()},
    )
    service = request.app[SERVICE_KEY]
    return await run_blocking(request, service.run, run_request, context)
