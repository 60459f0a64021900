"""The project's one exception tree and its one error shape.

Every failure a caller can see is a ``FunartError``. Handlers turn it into::

    {"type": "error", "error_code": "...", "error_message": "...",
     "details": {...}, "request_id": "..."}

with ``status`` as the HTTP status: 4xx for the caller's mistakes, 5xx for ours.

    FunartError
    ├── BadRequestError (400)
    │   ├── InvalidJSONError, UIFormatWorkflowError, InvalidWorkflowError
    │   ├── WorkflowValidationError, UnknownNodeError, URLNotAllowedError
    │   └── OutputTooLargeError (413)
    ├── TaskNotFoundError (404), TaskConflictError (409), TooManyJobsError (429)
    ├── ConfigError (500)
    ├── ComfyUIError (502)
    │   ├── ComfyUIStartError, ComfyUIExitedError
    │   └── ExecutionError, JobCancelledError (409)
    ├── NotReadyError (503), JobTimeoutError (504)
    └── StorageError (502)
"""

from __future__ import annotations

from typing import Any


class FunartError(Exception):
    """Base of every error the project reports to a caller."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_body(self, request_id: str | None) -> dict[str, Any]:
        """Build the project's error document for this error."""
        return {
            "type": "error",
            "error_code": self.code,
            "error_message": self.message,
            "details": self.details,
            "request_id": request_id,
        }


class BadRequestError(FunartError):
    status = 400
    code = "INVALID_REQUEST"


class InvalidJSONError(BadRequestError):
    code = "INVALID_JSON"


class UIFormatWorkflowError(BadRequestError):
    code = "UI_FORMAT_WORKFLOW"


class InvalidWorkflowError(BadRequestError):
    code = "INVALID_WORKFLOW"


class WorkflowValidationError(BadRequestError):
    """ComfyUI rejected the workflow at ``POST /prompt``; details carry its node errors."""

    code = "WORKFLOW_VALIDATION_FAILED"


class UnknownNodeError(BadRequestError):
    code = "UNKNOWN_NODE_CLASS"


class URLNotAllowedError(BadRequestError):
    code = "URL_NOT_ALLOWED"


class TaskNotFoundError(FunartError):
    status = 404
    code = "TASK_NOT_FOUND"


class TaskConflictError(FunartError):
    status = 409
    code = "TASK_ALREADY_FINISHED"


class TooManyJobsError(FunartError):
    status = 429
    code = "TOO_MANY_JOBS"


class OutputTooLargeError(BadRequestError):
    status = 413
    code = "OUTPUT_TOO_LARGE_FOR_BASE64"


class ConfigError(FunartError):
    code = "CONFIGURATION_ERROR"


class ComfyUIError(FunartError):
    status = 502
    code = "COMFYUI_ERROR"


class ComfyUIStartError(ComfyUIError):
    code = "COMFYUI_START_FAILED"


class ComfyUIExitedError(ComfyUIError):
    code = "COMFYUI_EXITED"


class ExecutionError(ComfyUIError):
    """A node raised while the job ran; details name the node and the exception."""

    status = 500
    code = "EXECUTION_FAILED"


class JobCancelledError(ComfyUIError):
    status = 409
    code = "JOB_CANCELLED"


class NotReadyError(FunartError):
    status = 503
    code = "NOT_READY"


class JobTimeoutError(FunartError):
    status = 504
    code = "JOB_TIMEOUT"


class StorageError(FunartError):
    status = 502
    code = "STORAGE_ERROR"
