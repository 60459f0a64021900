"""s.yaml rendered offline by the Serverless Devs CLI and checked against fc3's schema."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FUNART_CACHE_DIR", Path.home() / ".cache" / "funart-runtime"))
S_BIN = CACHE / "npm-global" / "bin"
# The props schema of the fc3 component (devsapp/fc3 src/schema.json). It is not in this
# repository: the project's CI keeps a copy beside the checkout; FUNART_FC3_SCHEMA
# points at another copy.
SCHEMA = Path(os.environ.get("FUNART_FC3_SCHEMA",
                             ROOT.parent / "shared" / "reference" / "fc3-schema.json"))


def preview(tmp_path: Path, **env: str) -> dict[str, Any]:
    """Run `s preview -o json` in a network namespace with loopback only."""
    assert (S_BIN / "s").exists(), f"no s CLI at {S_BIN}; run `make s-cli`"
    script = 'ip link set lo up; export HOME="$0" PATH="$1:$PATH"; shift; exec s "$@"'
    result = subprocess.run(
        ["unshare", "-n", "bash", "-c", script, str(tmp_path), str(S_BIN), "preview", "-o", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout[result.stdout.index("{"):]))


def fc3_schema() -> dict[str, Any]:
    """fc3's schema with its known gaps fixed: Ada GPUs and their memory sizes."""
    if not SCHEMA.is_file():
        pytest.skip(f"fc3 props schema not found at {SCHEMA}; set FUNART_FC3_SCHEMA")
    schema = copy.deepcopy(json.loads(SCHEMA.read_text()))
    gpu = schema["definitions"]["IGpuConfig"]["properties"]
    gpu["gpuType"]["enum"].append("fc.gpu.ada.1")
    gpu["gpuMemorySize"]["maximum"] = 98304
    return schema


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return preview(tmp_path_factory.mktemp("s-home"))


@pytest.mark.parametrize("resource", ["workspace", "api", "control"])
def test_props_match_fc3_schema(rendered: dict[str, Any], resource: str) -> None:
    props = rendered["resources"][resource]["props"]

    jsonschema.validate(props, fc3_schema())
    assert rendered["resources"][resource]["component"] == "fc3"


@pytest.mark.parametrize("role", ["workspace", "api"])
def test_gpu_functions(rendered: dict[str, Any], role: str) -> None:
    props = rendered["resources"][role]["props"]

    assert props["runtime"] == "custom-container"
    assert props["customContainerConfig"]["command"] == ["funart", "serve", role]
    assert props["customContainerConfig"]["port"] == 9000
    assert props["gpuConfig"] == {"gpuType": "fc.gpu.ada.1", "gpuMemorySize": 49152}
    assert props["environmentVariables"]["FUNART_NAS_ROOT"] == "/mnt/auto"
    hooks = props["instanceLifecycleConfig"]
    assert hooks["initializer"]["handler"] == "initialize"
    assert hooks["preStop"]["timeout"] >= 60
    assert props["triggers"][0]["triggerType"] == "http"


def test_api_async_and_scaling(rendered: dict[str, Any]) -> None:
    props = rendered["resources"]["api"]["props"]

    assert props["asyncInvokeConfig"]["asyncTask"] is True
    assert props["scalingConfig"] == {"minInstances": 0}
    assert "provisionConfig" not in props
    assert props["triggers"][0]["triggerConfig"]["authType"] == "function"


def test_workspace_saves_before_hook_deadline(rendered: dict[str, Any]) -> None:
    props = rendered["resources"]["workspace"]["props"]

    save_s = int(props["environmentVariables"]["FUNART_SNAPSHOT_TIMEOUT_S"])
    assert save_s < props["instanceLifecycleConfig"]["preStop"]["timeout"]


def test_control_function(rendered: dict[str, Any]) -> None:
    props = rendered["resources"]["control"]["props"]

    assert props["runtime"] == "custom.debian12"
    assert props["triggers"][0]["triggerConfig"]["authType"] == "function"
    assert props["layers"][0].startswith("acs:fc:")
    assert props["environmentVariables"]["FUNART_API_FUNCTION"] == "funart-api"


def test_environment_overrides(tmp_path: Path) -> None:
    rendered = preview(tmp_path, FUNART_REGION="cn-shanghai", FUNART_PREFIX="demo",
                       FUNART_OSS_BUCKET="my-bucket")

    api = rendered["resources"]["api"]["props"]
    assert api["region"] == "cn-shanghai"
    assert api["functionName"] == "demo-api"
    assert api["environmentVariables"]["FUNART_OSS_BUCKET"] == "my-bucket"
    assert rendered["resources"]["control"]["props"]["environmentVariables"][
        "FUNART_API_FUNCTION"] == "demo-api"
