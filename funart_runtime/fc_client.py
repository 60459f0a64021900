"""The FC 3.0 control API through Alibaba's SDK (``alibabacloud-fc20230330``).

A small client with plain dicts in and out. SDK errors are translated here, at the
boundary, into the project's error shape with FC's own error code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from alibabacloud_fc20230330 import models as fc_models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi import models as openapi_models

from .errors import FunartError
from .logs import log_call
from .storage import Credentials

logger = logging.getLogger(__name__)

T = TypeVar("T")


class FcClient:
    """Functions, async configuration and async tasks of one account and region."""

    def __init__(self, endpoint: str, region: str, credentials: Credentials) -> None:
        protocol = "http" if endpoint.startswith("http://") else "https"
        host = endpoint.split("://", 1)[-1]
        config = openapi_models.Config(
            access_key_id=credentials.access_key_id,
            access_key_secret=credentials.access_key_secret,
            security_token=credentials.security_token or None,
            endpoint=host, protocol=protocol, region_id=region,
        )
        self._client = Client(config)

    def get_function(self, name: str) -> dict[str, Any] | None:
        """Return the function's configuration, or None when it does not exist."""
        try:
            response = self._call("GetFunction", name, lambda: self._client.get_function(
                name, fc_models.GetFunctionRequest()))
        except FunartError as exc:
            if exc.details.get("fc_code") == "FunctionNotFound":
                return None
            raise
        return dict(response.body.to_map())

    def create_function(self, body: dict[str, Any]) -> dict[str, Any]:
        request = fc_models.CreateFunctionRequest(
            body=fc_models.CreateFunctionInput().from_map(body))
        response = self._call("CreateFunction", body.get("functionName", ""),
                              lambda: self._client.create_function(request))
        return dict(response.body.to_map())

    def update_function(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        request = fc_models.UpdateFunctionRequest(
            body=fc_models.UpdateFunctionInput().from_map(body))
        response = self._call("UpdateFunction", name,
                              lambda: self._client.update_function(name, request))
        return dict(response.body.to_map())

    def put_async_invoke_config(self, name: str, body: dict[str, Any]) -> None:
        request = fc_models.PutAsyncInvokeConfigRequest(
            body=fc_models.PutAsyncInvokeConfigInput().from_map(body))
        self._call("PutAsyncInvokeConfig", name,
                   lambda: self._client.put_async_invoke_config(name, request))

    def put_scaling_config(self, name: str, body: dict[str, Any]) -> None:
        request = fc_models.PutScalingConfigRequest(
            body=fc_models.PutScalingConfigInput().from_map(body))
        self._call("PutScalingConfig", name,
                   lambda: self._client.put_scaling_config(name, request))

    def get_async_task(self, name: str, task_id: str) -> dict[str, Any] | None:
        try:
            response = self._call("GetAsyncTask", name, lambda: self._client.get_async_task(
                name, task_id, fc_models.GetAsyncTaskRequest()))
        except FunartError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(response.body.to_map())

    def _call(self, action: str, function: str, call: Callable[[], T]) -> T:
        try:
            with log_call(logger, f"fc.{action}", function=function):
                return call()
        except Exception as exc:  # the SDK raises its own tree, rooted in Exception
            raise _translate(action, function, exc) from None


def _translate(action: str, function: str, exc: Exception) -> FunartError:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None) or getattr(exc, "statusCode", None)
    message = getattr(exc, "message", None) or str(exc)
    if not isinstance(status, int):
        status = 502
    return FunartError(
        f"FC {action} for function {function!r} failed: {code or type(exc).__name__}: "
        f"{message}",
        code="FC_API_ERROR",
        status=status if 400 <= status < 500 else 502,
        details={"fc_code": code, "fc_status": status, "action": action, "function": function},
    )
