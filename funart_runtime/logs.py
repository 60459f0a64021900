"""Logging with the FC request id, task id and prompt id on every record."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="-")
prompt_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("prompt_id", default="-")

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s "
    "[request_id=%(request_id)s task_id=%(task_id)s prompt_id=%(prompt_id)s] %(message)s"
)


class ContextFilter(logging.Filter):
    """Stamp the ids of the current request, task and prompt on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        record.prompt_id = prompt_id_var.get()
        return True


def setup_logging(level: str = "INFO") -> None:
    """Send every record to stderr in one format, with the ids attached."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ContextFilter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

    # urllib3 and oss2 log every connection at INFO/DEBUG; the project logs its own calls.
    for noisy in ("urllib3", "oss2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def log_call(logger: logging.Logger, what: str, **fields: object) -> Iterator[None]:
    """Log one line for an external call: what it was, how long it took, how it ended."""
    started = time.perf_counter()
    described = "".join(f" {key}={value}" for key, value in fields.items())
    try:
        yield
    except Exception as exc:
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info("%s%s failed in %.1f ms: %s", what, described, elapsed_ms, type(exc).__name__)
        raise
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("%s%s ok in %.1f ms", what, described, elapsed_ms)
