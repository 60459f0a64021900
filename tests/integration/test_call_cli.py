"""`funart call` against a running api function, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ApiHarness
from tests.support import media
from tests.support import workflows as wf

pytestmark = pytest.mark.integration
FUNART = str(Path(sys.executable).parent / "funart")


def funart_call(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FUNART, "call", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture()
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(wf.slow(steps=3, delay=0.2, prefix="cli/x")))
    return path


def test_call_sync_with_params(api: ApiHarness, workflow_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    result = funart_call(str(workflow_file), "--url", api.url, "--param", "1.width=40",
                         "--param", "1.height=24", "--out", str(out))

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["type"] == "serverless_api"
    assert "node 2 3/3" in result.stderr
    [saved] = list(out.iterdir())
    assert saved.name.startswith("3_0_")
    assert media.png_size(saved.read_bytes()) == (40, 24)


def test_call_async_polls_status(api: ApiHarness, workflow_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    result = funart_call(str(workflow_file), "--url", api.url, "--async",
                         "--param", "1.color=777", "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert "task_id: funart-call-" in result.stderr
    task_id = json.loads(result.stdout)["data"]["task_id"]
    assert task_id.startswith("funart-call-")
    assert api.status(task_id).json()["status"] == "succeeded"
    assert len(list(out.iterdir())) == 1


def test_call_reports_job_error(api: ApiHarness, tmp_path: Path) -> None:
    path = tmp_path / "fail.json"
    path.write_text(json.dumps(wf.failing("cli sees this")))

    result = funart_call(str(path), "--url", api.url)

    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["error_code"] == "EXECUTION_FAILED"
    assert "cli sees this" in error["error_message"]


@pytest.mark.parametrize(
    ("param", "message"),
    [("1.width", "use NODE.INPUT=VALUE"), ("width=3", "use NODE.INPUT=VALUE"),
     ("99.width=3", "no node '99'")],
)
def test_call_bad_param(api: ApiHarness, workflow_file: Path, param: str, message: str) -> None:
    result = funart_call(str(workflow_file), "--url", api.url, "--param", param)

    assert result.returncode == 1
    assert message in result.stderr


def test_call_rejects_ui_format(api: ApiHarness, tmp_path: Path) -> None:
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))

    result = funart_call(str(path), "--url", api.url)

    assert result.returncode == 1
    assert "Export (API)" in result.stderr


def test_call_signed_requests(api: ApiHarness, workflow_file: Path) -> None:
    env = {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": "AKID",
           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sign-secret"}

    result = subprocess.run([FUNART, "call", str(workflow_file), "--url", api.url, "--sign",
                             "--async"], capture_output=True, text=True, timeout=180, env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "serverless_api"


def test_call_sign_without_credentials(api: ApiHarness, workflow_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}

    result = subprocess.run([FUNART, "call", str(workflow_file), "--url", api.url, "--sign"],
                            capture_output=True, text=True, timeout=60, env=env)

    assert result.returncode == 1
    assert "--sign needs ALIBABA_CLOUD_ACCESS_KEY_ID" in result.stderr
