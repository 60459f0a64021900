"""The FC custom-runtime HTTP server shared by every role (aiohttp).

Every role serves ``POST /initialize`` and ``GET /pre-stop`` (FC lifecycle hooks),
``GET /health`` (readiness) and its own routes. Errors leave in the one shape
built by ``FunartError.to_body``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from aiohttp import web

from .errors import BadRequestError, FunartError
from .logs import prompt_id_var, request_id_var, task_id_var

logger = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXECUTOR_KEY = web.AppKey("executor", ThreadPoolExecutor)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)


class RoleService(Protocol):
    def initialize(self) -> dict[str, Any]: ...

    def pre_stop(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...


def request_id(request: web.Request) -> str:
    return str(request.get("request_id", "-"))


def task_id(request: web.Request) -> str:
    """Return the async task id (``x-fc-async-task-id``), else the FC request id."""
    return request.headers.get("x-fc-async-task-id") or request_id(request)


def error_response(error: FunartError, request: web.Request) -> web.Response:
    return web.json_response(
        error.to_body(request_id(request)), status=error.status, headers=error.headers
    )


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request its id (FC's ``x-fc-request-id`` or a new one) and error shape."""
    rid = request.headers.get("x-fc-request-id") or uuid.uuid4().hex
    request["request_id"] = rid
    request_id_var.set(rid)
    task_id_var.set("-")
    prompt_id_var.set("-")

    try:
        response = await handler(request)
    except FunartError as exc:
        level = logging.WARNING if exc.status < 500 else logging.ERROR
        logger.log(
            level, "%s %s failed: %s %s", request.method, request.path, exc.code, exc.message
        )
        response = error_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _http_error(request, exc)
        response = error_response(error, request)
    except Exception:
        logger.exception("%s %s failed with an unexpected error", request.method, request.path)
        error = FunartError("Internal error; the log has the traceback.", code="INTERNAL_ERROR")
        response = error_response(error, request)

    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> FunartError:
    if exc.status == 413:
        return FunartError(
            f"The request body is larger than {request.app[MAX_BODY_KEY]} bytes "
            "(FUNART_MAX_BODY_BYTES). Pass large inputs as URLs or oss:// objects.",
            code="BODY_TOO_LARGE", status=413,
        )
    return FunartError(
        f"{request.method} {request.path}: {exc.reason}.",
        code="NOT_FOUND" if exc.status == 404 else "HTTP_ERROR",
        status=exc.status,
    )


def lower_headers(request: web.Request) -> dict[str, str]:
    """Return the request's headers with lower-case names, as services look them up."""
    return {name.lower(): value for name, value in request.headers.items()}


async def json_object(request: web.Request) -> dict[str, Any]:
    """Read the body as a JSON object (an empty body is ``{}``); raise a 400 otherwise."""
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}.",
                              code="INVALID_JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.", code="INVALID_JSON")
    return body


async def run_blocking(request: web.Request, function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in the app's worker threads, keeping the logging ids."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args)
    return await loop.run_in_executor(request.app[EXECUTOR_KEY], call)


def build_app(
    service: RoleService, *, worker_threads: int = 16, max_body_bytes: int = 32 * 1024 * 1024
) -> web.Application:
    """Create the app with the lifecycle and health routes of ``service``."""
    app = web.Application(middlewares=[context_middleware], client_max_size=max_body_bytes)
    app[EXECUTOR_KEY] = ThreadPoolExecutor(worker_threads, thread_name_prefix="funart-job")
    app[MAX_BODY_KEY] = max_body_bytes

    async def initialize(request: web.Request) -> web.Response:
        return web.json_response(await run_blocking(request, service.initialize))

    async def pre_stop(request: web.Request) -> web.Response:
        return web.json_response(await run_blocking(request, service.pre_stop))

    async def health(request: web.Request) -> web.Response:
        state = service.health()
        return web.json_response(state, status=200 if state.get("ready") else 503)

    async def shutdown(app: web.Application) -> None:
        app[EXECUTOR_KEY].shutdown(wait=False, cancel_futures=True)

    app.router.add_post("/initialize", initialize)
    app.router.add_get("/pre-stop", pre_stop)
    app.router.add_get("/health", health)
    app.on_cleanup.append(shutdown)
    return app
