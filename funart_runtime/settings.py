"""Settings: every environment variable the runtime reads, parsed once into a frozen object."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

# Variable name -> (field name, what it accepts, for error messages).
_VARIABLES: dict[str, tuple[str, str]] = {
    "FUNART_NAS_ROOT": ("nas_root", "an absolute path"),
    "FUNART_COMFYUI_DIR": ("comfyui_dir", "an absolute path to the ComfyUI tree"),
    "FUNART_PYTHON": ("python", "a path to the interpreter that runs ComfyUI"),
    "FUNART_COMFYUI_PORT": ("comfyui_port", "an integer port from 1 to 65535"),
    "FUNART_COMFYUI_ARGS": ("comfyui_args", "command-line arguments in shell syntax"),
    "FUNART_WORK_DIR": ("work_dir", "an absolute path on local disk"),
    "FUNART_SNAPSHOT": ("snapshot", "a snapshot name, or empty"),
    "FUNART_OSS_ENDPOINT": ("oss_endpoint", "an OSS endpoint such as oss-cn-hangzhou.aliyuncs.com"),
    "FUNART_OSS_BUCKET": ("oss_bucket", "a bucket name, or empty to disable uploads"),
    "FUNART_OSS_PREFIX": ("oss_prefix", "an object key prefix without leading '/'"),
    "FUNART_OSS_URL_EXPIRES_S": ("oss_url_expires_s", "an integer number of seconds >= 1"),
    "FUNART_JOB_TIMEOUT_S": ("job_timeout_s", "a number of seconds > 0"),
    "FUNART_READY_TIMEOUT_S": ("ready_timeout_s", "a number of seconds > 0"),
    "FUNART_PRESTOP_TIMEOUT_S": ("prestop_timeout_s", "a number of seconds >= 0"),
    "FUNART_BASE64_MAX_BYTES": ("base64_max_bytes", "an integer number of bytes >= 0"),
    "FUNART_ALLOW_PRIVATE_URLS": ("allow_private_urls", "true or false"),
    "FUNART_MAX_JOBS": ("max_jobs", "an integer number of jobs >= 1"),
    "FUNART_VENV_DIR": ("venv_dir", "an absolute path to ComfyUI's virtualenv, or empty"),
    "FUNART_API_FUNCTION": ("api_function", "the api function's name"),
    "FUNART_WORKSPACE_FUNCTION": ("workspace_function", "the workspace function's name"),
    "FUNART_FC_ENDPOINT": ("fc_endpoint", "an FC API endpoint URL, or empty for the default"),
    "FC_REGION": ("region", "a region id such as cn-hangzhou"),
    "FUNART_SLS_ENDPOINT": ("sls_endpoint", "an SLS endpoint such as cn-hangzhou.log.aliyuncs.com"),
    "FUNART_SLS_PROJECT": ("sls_project", "the SLS project of the functions' logs"),
    "FUNART_SLS_LOGSTORE": ("sls_logstore", "the SLS logstore of the functions' logs"),
    "FC_ACCOUNT_ID": ("account_id", "an Alibaba Cloud account id"),
    "FUNART_BASE_MANIFEST": ("base_manifest", "a path to the image's base manifest, or empty"),
    "FUNART_GITHUB_MIRROR": ("github_mirror", "a URL that replaces https://github.com/"),
    "FUNART_PIP_INDEX_URL": ("pip_index_url", "a PyPI simple index URL, or empty"),
    "FUNART_INSTALL_TIMEOUT_S": ("install_timeout_s", "a number of seconds > 0"),
    "FUNART_SNAPSHOT_TIMEOUT_S": ("snapshot_timeout_s", "a number of seconds > 0"),
    "FUNART_MAX_BODY_BYTES": ("max_body_bytes", "an integer number of bytes >= 1024"),
    "FUNART_INPUT_MAX_BYTES": ("input_max_bytes", "an integer number of bytes >= 1"),
    "FUNART_INPUT_TIMEOUT_S": ("input_timeout_s", "a number of seconds > 0"),
    "FUNART_WEBHOOK_SECRET": ("webhook_secret", "a shared secret for webhook signatures"),
    "FUNART_WEBHOOK_ATTEMPTS": ("webhook_attempts", "an integer number of attempts >= 1"),
    "FUNART_WEBHOOK_BACKOFF_S": ("webhook_backoff_s", "a number of seconds >= 0"),
    "FUNART_PROGRESS_INTERVAL_S": ("progress_interval_s", "a number of seconds >= 0"),
    "FUNART_LOG_LEVEL": ("log_level", "DEBUG, INFO, WARNING or ERROR"),
    "FC_CUSTOM_LISTEN_PORT": ("listen_port", "an integer port from 1 to 65535"),
    "ALIBABA_CLOUD_ACCESS_KEY_ID": ("access_key_id", "an AccessKey ID"),
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ("access_key_secret", "an AccessKey secret"),
    "ALIBABA_CLOUD_SECURITY_TOKEN": ("security_token", "an STS security token"),
}

_INTEGER_FIELDS = {
    "comfyui_port", "listen_port", "oss_url_expires_s", "base64_max_bytes", "max_jobs",
    "webhook_attempts", "max_body_bytes", "input_max_bytes",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Settings(BaseModel):
    """The runtime's configuration. Build it with ``Settings.from_env``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nas_root: Path = Path("/mnt/auto")
    comfyui_dir: Path = Path("/root/comfyui")
    python: Path = Path("/root/venv/bin/python")
    comfyui_port: int = Field(8188, ge=1, le=65535)
    comfyui_args: tuple[str, ...] = ()
    work_dir: Path = Path("/tmp/funart")
    snapshot: str = ""
    oss_endpoint: str = ""
    oss_bucket: str = ""
    oss_prefix: str = "funart"
    oss_url_expires_s: int = Field(3600, ge=1)
    job_timeout_s: float = Field(600.0, gt=0)
    ready_timeout_s: float = Field(300.0, gt=0)
    prestop_timeout_s: float = Field(60.0, ge=0)
    # 16 MiB of raw bytes is about 21 MiB of base64, inside FC's 32 MB response budget.
    base64_max_bytes: int = Field(16 * 1024 * 1024, ge=0)
    allow_private_urls: bool = False
    # Jobs one instance admits at once (running plus waiting in ComfyUI's queue).
    max_jobs: int = Field(32, ge=1)
    # Control: the functions it manages and the FC API it calls.
    api_function: str = "funart-api"
    workspace_function: str = "funart-workspace"
    fc_endpoint: str = ""
    region: str = "cn-hangzhou"
    sls_endpoint: str = ""
    sls_project: str = ""
    sls_logstore: str = ""
    account_id: str = ""
    # Workspace: the virtualenv saved in snapshots (default: the one FUNART_PYTHON is in).
    venv_dir: Path | None = None
    base_manifest: str = ""
    github_mirror: str = ""
    pip_index_url: str = ""
    install_timeout_s: float = Field(900.0, gt=0)
    # Below FunArt's 600 s PreStop hook, so a save that cannot finish is abandoned in time.
    snapshot_timeout_s: float = Field(540.0, gt=0)
    # FC accepts sync request bodies up to 32 MB.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    input_max_bytes: int = Field(100 * 1024 * 1024, ge=1)
    input_timeout_s: float = Field(60.0, gt=0)
    webhook_secret: str = Field("", repr=False)
    webhook_attempts: int = Field(4, ge=1)
    webhook_backoff_s: float = Field(1.0, ge=0)
    progress_interval_s: float = Field(1.0, ge=0)
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    listen_port: int = Field(9000, ge=1, le=65535)
    access_key_id: str = Field("", repr=False)
    access_key_secret: str = Field("", repr=False)
    security_token: str = Field("", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``).

        Raises ConfigError naming the variable, its value and what it accepts.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for variable, (field, accepted) in _VARIABLES.items():
            raw = env.get(variable)
            if raw is None:
                continue
            values[field] = _convert(variable, field, raw.strip(), accepted)

        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise _config_error(exc, env) from None

        _check_paths(settings)
        return settings

    @property
    def python_env_dir(self) -> Path:
        """Return the virtualenv that contains ComfyUI's packages."""
        if self.venv_dir is not None:
            return self.venv_dir
        return self.python.parent.parent

    @property
    def fc_endpoint_url(self) -> str:
        """Return the FC 3.0 API endpoint: FUNART_FC_ENDPOINT, else the account's regional one."""
        if self.fc_endpoint:
            return self.fc_endpoint
        return f"https://{self.account_id}.{self.region}.fc.aliyuncs.com"

    @property
    def comfyui_url(self) -> str:
        return f"http://127.0.0.1:{self.comfyui_port}"

    @property
    def oss_enabled(self) -> bool:
        return bool(self.oss_bucket and self.oss_endpoint)


def _to_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "allow_private_urls": _to_bool,
    "comfyui_args": lambda raw: tuple(shlex.split(raw)),
    "oss_prefix": lambda raw: raw.strip("/"),
    "log_level": str.upper,
    "venv_dir": lambda raw: raw or None,
}


def _convert(variable: str, field: str, raw: str, accepted: str) -> Any:
    converter = _CONVERTERS.get(field)
    if converter is None and field in _INTEGER_FIELDS:
        converter = int
    elif converter is None and field.endswith("_s"):
        converter = float
    if converter is None:
        return raw
    try:
        return converter(raw)
    except ValueError as exc:
        # shlex explains what is wrong with the quoting; int() and float() only echo.
        reason = f" ({exc})" if field == "comfyui_args" else ""
        raise _invalid(variable, raw, accepted + reason) from None


def _check_paths(settings: Settings) -> None:
    for variable in ("FUNART_NAS_ROOT", "FUNART_COMFYUI_DIR", "FUNART_WORK_DIR"):
        field = _VARIABLES[variable][0]
        path: Path = getattr(settings, field)
        if not path.is_absolute():
            raise _invalid(variable, str(path), _VARIABLES[variable][1])


def _invalid(variable: str, raw: str, accepted: str) -> ConfigError:
    return ConfigError(
        f"Invalid value for {variable}: {raw!r}. Expected {accepted}.",
        details={"variable": variable, "value": raw, "accepted": accepted},
    )


def _config_error(exc: ValidationError, env: Mapping[str, str]) -> ConfigError:
    by_field = {field: (variable, accepted) for variable, (field, accepted) in _VARIABLES.items()}
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    variable, accepted = by_field.get(field, (field, "a valid value"))
    return _invalid(variable, env.get(variable, str(error.get("input"))), accepted)
