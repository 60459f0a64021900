"""Settings read from an injected environment mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from funart_runtime.errors import ConfigError
from funart_runtime.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.nas_root == Path("/mnt/auto")
    assert settings.comfyui_dir == Path("/root/comfyui")
    assert settings.python == Path("/root/venv/bin/python")
    assert settings.comfyui_port == 8188
    assert settings.oss_prefix == "funart"
    assert settings.oss_url_expires_s == 3600
    assert settings.listen_port == 9000
    assert settings.allow_private_urls is False
    assert settings.oss_enabled is False


def test_values_parsed() -> None:
    settings = Settings.from_env({
        "FUNART_COMFYUI_PORT": "8190",
        "FUNART_COMFYUI_ARGS": "--cpu --preview-method 'auto'",
        "FUNART_OSS_ENDPOINT": "oss-cn-hangzhou.aliyuncs.com",
        "FUNART_OSS_BUCKET": "b",
        "FUNART_OSS_PREFIX": "/outputs/",
        "FUNART_JOB_TIMEOUT_S": "12.5",
        "FUNART_ALLOW_PRIVATE_URLS": "TRUE",
        "FUNART_LOG_LEVEL": "debug",
        "FC_CUSTOM_LISTEN_PORT": "9001",
    })

    assert settings.comfyui_port == 8190
    assert settings.comfyui_args == ("--cpu", "--preview-method", "auto")
    assert settings.oss_prefix == "outputs"
    assert settings.oss_enabled is True
    assert settings.job_timeout_s == 12.5
    assert settings.allow_private_urls is True
    assert settings.log_level == "DEBUG"
    assert settings.listen_port == 9001
    assert settings.comfyui_url == "http://127.0.0.1:8190"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ValueError):
        settings.comfyui_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("FUNART_COMFYUI_PORT", "eighty", "1 to 65535"),
        ("FUNART_COMFYUI_PORT", "70000", "1 to 65535"),
        ("FC_CUSTOM_LISTEN_PORT", "0", "1 to 65535"),
        ("FUNART_OSS_URL_EXPIRES_S", "0", ">= 1"),
        ("FUNART_JOB_TIMEOUT_S", "-1", "> 0"),
        ("FUNART_READY_TIMEOUT_S", "soon", "> 0"),
        ("FUNART_BASE64_MAX_BYTES", "1.5", "bytes"),
        ("FUNART_ALLOW_PRIVATE_URLS", "maybe", "true or false"),
        ("FUNART_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("FUNART_NAS_ROOT", "relative/path", "absolute path"),
        ("FUNART_COMFYUI_ARGS", "--flag 'unclosed", "shell syntax"),
    ],
)
def test_invalid_value_names_variable(variable: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})

    message = caught.value.message
    assert variable in message
    assert repr(value) in message
    assert accepted in message
    assert caught.value.details["variable"] == variable


def test_secret_not_in_repr() -> None:
    settings = Settings.from_env({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "hidden-value"})

    assert "hidden-value" not in repr(settings)
