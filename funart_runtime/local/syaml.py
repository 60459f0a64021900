"""Rendering of the project's s.yaml the way Serverless Devs does it, for ``funart local``.

Only the magic variables s.yaml uses are supported: ``${env('NAME', 'default')}``,
``${env('NAME')}`` and ``${vars.name}``. A value that is exactly one variable keeps the
variable's type (so numbers in ``vars`` stay numbers), as ``s preview`` shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_ENV = re.compile(r"""^env\(\s*['"]([^'"]+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)$""")


def load(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``path`` and return it with every variable replaced."""
    environ = os.environ if environ is None else environ
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or "resources" not in document:
        raise ConfigError(f"{path} has no resources; it is not a Serverless Devs s.yaml.")

    variables = _render(document.get("vars") or {}, {}, environ)
    return dict(_render(document, variables, environ))


def _render(value: Any, variables: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _render(item, variables, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, variables, environ) for item in value]
    if not isinstance(value, str):
        return value

    whole = _VARIABLE.fullmatch(value)
    if whole:
        return _resolve(whole.group(1), variables, environ)
    return _VARIABLE.sub(lambda m: str(_resolve(m.group(1), variables, environ)), value)


def _resolve(expression: str, variables: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    expression = expression.strip()
    if expression.startswith("vars."):
        name = expression[len("vars."):]
        if name not in variables:
            raise ConfigError(f"s.yaml uses ${{vars.{name}}}, which vars does not define.")
        return variables[name]

    match = _ENV.match(expression)
    if match:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is None:
            raise ConfigError(f"s.yaml needs the environment variable {name}; set it.")
        return default
    raise ConfigError(f"funart local does not support the s.yaml variable ${{{expression}}}.")
