"""Function logs from SLS (Simple Log Service) through ``aliyun-log-python-sdk``."""

from __future__ import annotations

import logging
from typing import Any

from aliyun.log import GetLogsRequest, LogClient, LogException

from .errors import FunartError
from .logs import log_call
from .storage import Credentials

logger = logging.getLogger(__name__)


def quote(value: str) -> str:
    """Quote a value for an SLS query, so ids with '-' or ':' match as one phrase."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_query(function: str, request_id: str | None, task_id: str | None,
                text: str | None) -> str:
    """Build the SLS search for one function's logs, narrowed by ids or free text."""
    terms = [f"functionName: {quote(function)}"]
    # The runtime writes request_id=… and task_id=… into every log line it emits.
    terms += [quote(value) for value in (request_id, task_id, text) if value]
    return " and ".join(terms)


def query_logs(endpoint: str, project: str, logstore: str, credentials: Credentials, *,
               query: str, from_time: int, to_time: int, limit: int) -> list[dict[str, Any]]:
    """Return up to ``limit`` log records matching ``query``, newest first."""
    client = LogClient(endpoint, credentials.access_key_id, credentials.access_key_secret,
                       securityToken=credentials.security_token or None)
    request = GetLogsRequest(project, logstore, from_time, to_time, query=query, line=limit,
                             reverse=True)
    try:
        with log_call(logger, "sls.get_logs", project=project, logstore=logstore):
            response = client.get_logs(request)
    except LogException as exc:
        raise FunartError(
            f"SLS query on {project}/{logstore} failed: {exc.get_error_code()}: "
            f"{exc.get_error_message()}. Check FUNART_SLS_PROJECT, FUNART_SLS_LOGSTORE and the "
            "role's log permissions.",
            code="SLS_ERROR", status=502,
            details={"sls_code": exc.get_error_code(), "project": project, "logstore": logstore},
        ) from None
    return [dict(log.get_contents(), __time__=log.get_time()) for log in response.get_logs()]
