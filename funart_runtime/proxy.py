"""Reverse proxy from the function's HTTP trigger to ComfyUI, HTTP and websocket.

The workspace function serves the ComfyUI UI through its own URL: every request that
is not a lifecycle or ``/api/workspace`` route is passed to ComfyUI on loopback, and
``/ws`` is bridged frame by frame in both directions, binary preview frames included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from .errors import NotReadyError

logger = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones aiohttp sets itself.
_HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}
# ComfyUI rejects a request whose Origin differs from its loopback Host. The browser's
# Origin names the function URL, so the proxy drops it, as a same-origin client would.
_DROPPED_REQUEST_HEADERS = _HOP_HEADERS | {"origin", "accept-encoding"}
# No cap on frame size: ComfyUI sends previews and workflows of many megabytes.
_NO_LIMIT = 0


class ComfyProxy:
    """Forward requests to the ComfyUI at ``base_url`` while ``is_ready()`` holds."""

    def __init__(
        self,
        base_url: str,
        is_ready: Callable[[], bool],
        extra_headers: Callable[[web.Request], dict[str, str]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.is_ready = is_ready
        self.extra_headers = extra_headers
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.is_ready():
            raise NotReadyError(
                "ComfyUI is not running yet. Call POST /initialize, or wait for the start "
                "to finish and reload the page."
            )
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._http(request)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        session = await self.session()
        headers = _forward_headers(request)
        if self.extra_headers is not None:
            headers.update(self.extra_headers(request))
        async with session.request(
            request.method, self.base_url + str(request.rel_url), headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(256 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(max_msg_size=_NO_LIMIT, autoping=True)
        await client.prepare(request)
        session = await self.session()
        headers = _forward_headers(request, websocket=True)
        if self.extra_headers is not None:
            headers.update(self.extra_headers(request))
        async with session.ws_connect(
            self.base_url + str(request.rel_url), max_msg_size=_NO_LIMIT, headers=headers,
        ) as upstream:
            await asyncio.gather(_pipe(client, upstream), _pipe(upstream, client))
        await client.close()
        return client


async def _pipe(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if target.closed:
            break
        if message.type == aiohttp.WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(message.data)
        else:
            break
    if not target.closed:
        await target.close()


def _forward_headers(request: web.Request, websocket: bool = False) -> dict[str, str]:
    dropped = _DROPPED_REQUEST_HEADERS
    if websocket:
        dropped = dropped | {"sec-websocket-key", "sec-websocket-version",
                             "sec-websocket-extensions", "sec-websocket-protocol"}
    return {name: value for name, value in request.headers.items() if name.lower() not in dropped}
