"""FC lifecycle of the api function: initialize, crash and restart, deadlines, pre-stop."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from funart_runtime import devstack
from tests.conftest import ApiHarness, start_api
from tests.support import workflows as wf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fragile_api(
    tmp_path_factory: pytest.TempPathFactory,
    comfy_env: devstack.ComfyEnv,
    comfy_tree: Path,
    moto: devstack.MotoServer,
) -> Iterator[ApiHarness]:
    """An api instance with short limits, for tests that kill, time out or stop it."""
    harness = start_api(
        tmp_path_factory, comfy_env, comfy_tree, moto, "fragile",
        extra={"FUNART_JOB_TIMEOUT_S": "6", "FUNART_BASE64_MAX_BYTES": "300",
               "FUNART_PRESTOP_TIMEOUT_S": "30", "FUNART_MAX_JOBS": "2",
               "FUNART_WEBHOOK_SECRET": "x", "FUNART_MAX_BODY_BYTES": "200000"},
    )
    yield harness
    harness.server.stop()


def _uninitialized(tmp_path_factory: pytest.TempPathFactory, comfy_env: devstack.ComfyEnv,
                   comfy_tree: Path, moto: devstack.MotoServer, **extra: str) -> ApiHarness:
    return start_api(tmp_path_factory, comfy_env, comfy_tree, moto, "broken", extra=extra,
                     initialize=False)


def test_initialize_wrong_python(tmp_path_factory, comfy_env, comfy_tree, moto) -> None:
    harness = _uninitialized(tmp_path_factory, comfy_env, comfy_tree, moto,
                             FUNART_PYTHON="/nonexistent/bin/python")
    try:
        response = harness.server.initialize()
    finally:
        harness.server.stop()

    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "COMFYUI_START_FAILED"
    assert "FUNART_PYTHON /nonexistent/bin/python" in body["error_message"]


def test_initialize_wrong_comfyui_dir(tmp_path_factory, comfy_env, comfy_tree, moto) -> None:
    empty = tmp_path_factory.mktemp("not-comfy")
    harness = _uninitialized(tmp_path_factory, comfy_env, comfy_tree, moto,
                             FUNART_COMFYUI_DIR=str(empty))
    try:
        response = harness.server.initialize()
    finally:
        harness.server.stop()

    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "COMFYUI_START_FAILED"
    assert f"FUNART_COMFYUI_DIR {empty} has no main.py" in body["error_message"]


def test_initialize_reports_log_tail(tmp_path_factory, comfy_env, comfy_tree, moto) -> None:
    harness = _uninitialized(tmp_path_factory, comfy_env, comfy_tree, moto,
                             FUNART_COMFYUI_ARGS="--cpu --no-such-flag")
    try:
        response = harness.server.initialize()
    finally:
        harness.server.stop()

    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "COMFYUI_START_FAILED"
    assert "exited during start" in body["error_message"]
    assert "--no-such-flag" in body["details"]["log_tail"]


def test_invalid_setting_fails_at_start(tmp_path: Path) -> None:
    env = dict(os.environ, FUNART_COMFYUI_PORT="eighty")
    funart = Path(sys.executable).parent / "funart"

    result = subprocess.run([str(funart), "serve", "api", "--port", str(devstack.free_port())],
                            env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "FUNART_COMFYUI_PORT" in result.stderr
    assert "'eighty'" in result.stderr
    assert "1 to 65535" in result.stderr


def test_base64_over_cap_points_to_oss(fragile_api: ApiHarness) -> None:
    response = fragile_api.run(wf.image_save(64, 64), query="?output_base64=true")

    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error_code"] == "OUTPUT_TOO_LARGE_FOR_BASE64"
    assert "output_oss=true" in body["error_message"]
    assert body["details"]["limit_bytes"] == 300
    [entry] = body["details"]["results"]
    assert requests.get(entry["output"]["oss"]["url"], timeout=10).status_code == 200


def test_admission_limit_answers_429(fragile_api: ApiHarness) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(fragile_api.run, wf.slow(steps=4, delay=0.5, prefix=f"busy/{i}"))
                   for i in range(2)]
        time.sleep(1.0)
        refused = fragile_api.run(wf.image_save())
        finished = [future.result(timeout=60) for future in running]

    assert refused.status_code == 429, refused.text
    assert refused.json()["error_code"] == "TOO_MANY_JOBS"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert [response.status_code for response in finished] == [200, 200]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://100.100.100.200/x",
            "http://10.1.2.3/x", "http://[::1]/x", "ftp://example.com/x"],
)
def test_private_webhook_rejected(fragile_api: ApiHarness, url: str) -> None:
    response = fragile_api.run({"prompt": wf.image_save(), "webhook_url": url})

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "URL_NOT_ALLOWED"
    assert body["details"]["url"] == url


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/x.png", "http://127.0.0.1:9/x.png",
            "http://100.100.100.200/x.png"],
)
def test_private_input_url_rejected(fragile_api: ApiHarness, url: str) -> None:
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": url}},
                "2": wf.save_image("1")}

    response = fragile_api.run(workflow)

    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "URL_NOT_ALLOWED"
    assert response.json()["details"]["url"] == url


def test_oversized_body(fragile_api: ApiHarness) -> None:
    response = fragile_api.run({"prompt": wf.image_save(), "padding": "x" * 300_000})

    assert response.status_code == 413
    body = response.json()
    assert body["error_code"] == "BODY_TOO_LARGE"
    assert "200000 bytes" in body["error_message"]
    assert fragile_api.run(wf.image_save()).status_code == 200


def test_job_deadline_interrupts(fragile_api: ApiHarness) -> None:
    started = time.monotonic()
    response = fragile_api.run(wf.slow(steps=40, delay=0.5, prefix="deadline/x"))
    elapsed = time.monotonic() - started

    assert response.status_code == 504, response.text
    assert response.json()["error_code"] == "JOB_TIMEOUT"
    assert elapsed < 15
    follow_up = fragile_api.run(wf.image_save(prefix="after/deadline"))
    assert follow_up.status_code == 200, follow_up.text


def test_comfyui_killed_mid_job(fragile_api: ApiHarness) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fragile_api.run, wf.slow(steps=20, delay=0.25, prefix="kill/x"))
        time.sleep(1.5)
        pid = fragile_api.health()["comfyui_pid"]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        response = pending.result(timeout=60)
        failed_after = time.monotonic() - killed_at

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error_code"] == "COMFYUI_EXITED"
    assert body["details"]["exit_code"] == -signal.SIGKILL
    assert body["details"]["log_tail"]
    assert failed_after < 8

    _wait_ready(fragile_api, timeout_s=120)
    assert fragile_api.health()["comfyui_pid"] != pid
    assert "ComfyUI exited unexpectedly: exit_code=-9" in fragile_api.log()
    follow_up = fragile_api.run(wf.image_save(prefix="after/kill"))
    assert follow_up.status_code == 200, follow_up.text


def test_pre_stop_drains_running_job(fragile_api: ApiHarness) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        job = pool.submit(fragile_api.run, wf.slow(steps=6, delay=0.4, prefix="drain/x"))
        time.sleep(1.0)
        stop = pool.submit(requests.get, f"{fragile_api.url}/pre-stop", timeout=60)
        time.sleep(0.3)
        refused = fragile_api.run(wf.image_save())
        job_response = job.result(timeout=60)
        stop_response = stop.result(timeout=60)

    assert job_response.status_code == 200, job_response.text
    assert refused.status_code == 503
    assert refused.json()["error_code"] == "NOT_READY"
    assert stop_response.status_code == 200
    assert stop_response.json() == {"comfyui": "stopped", "unfinished_jobs": 0}
    assert fragile_api.health()["comfyui"] == "stopped"


def _wait_ready(harness: ApiHarness, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if harness.health()["comfyui"] == "ready":
            return
        time.sleep(0.5)
    raise AssertionError(f"ComfyUI not ready again after {timeout_s} s: {harness.health()}")
