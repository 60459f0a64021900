"""Download of caller-supplied input URLs, with the guards a public endpoint needs.

Every hop of a redirect chain is checked against private addresses, the size is
capped while streaming, and the content type must be media or binary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from .errors import BadRequestError
from .logs import log_call
from .urlguard import check_url

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_ALLOWED_TYPES = ("image/", "audio/", "video/", "application/octet-stream", "model/",
                  "binary/octet-stream")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    final_url: str


def download(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float) -> Download:
    """Fetch ``url`` into memory: an input file, at most ``max_bytes``."""
    with open_checked(url, allow_private=allow_private, timeout_s=timeout_s) as response:
        try:
            return _read(url, response, max_bytes)
        except requests.RequestException as exc:
            raise _fetch_error(url, exc, timeout_s) from None


def open_checked(
    url: str, *, allow_private: bool, timeout_s: float, headers: dict[str, str] | None = None
) -> requests.Response:
    """Open a streaming GET of ``url``, following at most MAX_REDIRECTS redirects, each
    one checked again before it is followed. The caller closes the response.

    NOTE: the address is checked before requests connects, so a DNS answer that
    changes between the check and the connection is not caught.
    """
    session = requests.Session()
    session.trust_env = False
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current, allow_private=allow_private, what="URL")
        try:
            with log_call(logger, "download.get"):
                response = session.get(current, stream=True, allow_redirects=False,
                                       headers=headers, timeout=(min(10.0, timeout_s), timeout_s))
        except requests.RequestException as exc:
            raise _fetch_error(url, exc, timeout_s) from None
        if not response.is_redirect:
            return response
        response.close()
        current = urljoin(current, response.headers["Location"])
    raise BadRequestError(
        f"URL {url!r} redirected more than {MAX_REDIRECTS} times.",
        code="INPUT_FETCH_FAILED", details={"url": url},
    )


def _fetch_error(url: str, exc: Exception, timeout_s: float) -> BadRequestError:
    return BadRequestError(
        f"Could not fetch {url!r}: {type(exc).__name__}. Check that it is reachable; the "
        f"timeout is {timeout_s:g} s.",
        code="INPUT_FETCH_FAILED", details={"url": url},
    )


def _read(url: str, response: requests.Response, max_bytes: int) -> Download:
    if response.status_code != 200:
        raise BadRequestError(
            f"Input URL {url!r} returned HTTP {response.status_code}. Check that the file "
            "exists and the URL is readable without credentials.",
            code="INPUT_FETCH_FAILED", details={"url": url, "status": response.status_code},
        )

    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and not content_type.startswith(_ALLOWED_TYPES):
        raise BadRequestError(
            f"Input URL {url!r} returned content type {content_type!r}; expected an image, "
            "audio or video file.",
            code="INPUT_TYPE_INVALID", details={"url": url, "content_type": content_type},
        )

    declared = int(response.headers.get("Content-Length") or 0)
    if declared > max_bytes:
        raise _too_large(url, declared, max_bytes)
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(url, len(body), max_bytes)
    return Download(bytes(body), content_type, response.url)


def _too_large(url: str, size: int, cap: int) -> BadRequestError:
    return BadRequestError(
        f"Input URL {url!r} is larger than FUNART_INPUT_MAX_BYTES={cap} bytes "
        f"(at least {size}). Send a smaller file or raise the limit.",
        code="INPUT_TOO_LARGE", details={"url": url, "limit_bytes": cap},
    )
