"""Webhook delivery of a task's final document, signed with HMAC-SHA256.

The receiver checks ``X-Funart-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw
request body with the shared FUNART_WEBHOOK_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import requests

from .logs import log_call

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Funart-Signature"
TASK_HEADER = "X-Funart-Task-Id"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str, body: bytes, *, secret: str, task_id: str, attempts: int, backoff_s: float
) -> dict[str, Any]:
    """POST ``body`` to ``url``, retrying with exponential backoff; return the outcome.

    Redirects are not followed, so a redirect cannot lead the request to an address
    the URL check did not see.
    """
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        TASK_HEADER: task_id,
    }
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            with log_call(logger, "webhook.post", attempt=attempt):
                response = requests.post(
                    url, data=body, headers=headers, timeout=10, allow_redirects=False
                )
            if 200 <= response.status_code < 300:
                return {"url": url, "delivered": True, "attempts": attempt,
                        "status_code": response.status_code}
            error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))

    logger.error("Webhook delivery failed after %s attempt(s): %s", attempts, error)
    return {"url": url, "delivered": False, "attempts": attempts, "error": error}
