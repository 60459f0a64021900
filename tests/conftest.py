"""Fixtures: real ComfyUI 0.3.75, a moto server as OSS and ``funart serve api``, on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oss2
import pytest
import requests

from funart_runtime import devstack

ROOT = Path(__file__).resolve().parent.parent
TEST_NODES = Path(__file__).resolve().parent / "comfyui_nodes" / "funart_test_nodes"
BUCKET = "funart-test"
# A secret distinctive enough to search the logs for; moto does not check signatures.
SECRET = "s3cret-never-in-logs-7f3a"
WEBHOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="session")
def comfy_env() -> devstack.ComfyEnv:
    return devstack.ComfyEnv.locate()


@pytest.fixture(scope="session")
def comfy_tree(comfy_env: devstack.ComfyEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the ComfyUI tree with the test-only nodes installed."""
    return comfy_env.copy_tree(tmp_path_factory.mktemp("comfy") / "ComfyUI", [TEST_NODES])


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.MotoServer]:
    server = devstack.MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log").start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bucket(moto: devstack.MotoServer) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth("test", "test"), moto.endpoint, BUCKET)


class ApiHarness:
    """One api server and what a test needs to reach its files."""

    def __init__(self, server: devstack.ApiServer, work_dir: Path, nas_root: Path) -> None:
        self.server = server
        self.url = server.url
        self.work_dir = work_dir
        self.nas_root = nas_root
        self.input_dir = work_dir / "comfyui" / "input"
        self.output_dir = work_dir / "comfyui" / "output"

    def run(self, body: Any, *, query: str = "", timeout: float = 180, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(
            f"{self.url}/api/serverless/run{query}", data=data, timeout=timeout, **kwargs
        )

    def run_async(self, body: Any, task_id: str, timeout: float = 180) -> requests.Response:
        """Deliver ``body`` as FC delivers an async call: the task id in a header."""
        return self.run(body, timeout=timeout, headers={
            "X-Fc-Invocation-Type": "Async", "x-fc-async-task-id": task_id,
        })

    def status(self, task_id: str) -> requests.Response:
        return requests.get(f"{self.url}/api/serverless/status", params={"task_id": task_id},
                            timeout=30)

    def cancel(self, task_id: str) -> requests.Response:
        return requests.post(f"{self.url}/api/serverless/cancel", params={"task_id": task_id},
                             timeout=60)

    def health(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/health", timeout=10).json())

    def log(self) -> str:
        return self.server.log_path.read_text(errors="replace")


def start_api(
    tmp_path_factory: pytest.TempPathFactory,
    comfy_env: devstack.ComfyEnv,
    comfy_tree: Path,
    moto: devstack.MotoServer,
    name: str,
    extra: dict[str, str] | None = None,
    initialize: bool = True,
) -> ApiHarness:
    base = tmp_path_factory.mktemp(name)
    env = devstack.api_environment(
        comfy_env=comfy_env,
        comfyui_dir=comfy_tree,
        work_dir=base / "work",
        nas_root=base / "nas",
        oss_endpoint=moto.endpoint,
        bucket=BUCKET,
        extra={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET, **(extra or {})},
    )
    devstack.link_test_checkpoint(base / "nas")
    server = devstack.ApiServer(env, base / "api.log").start()
    harness = ApiHarness(server, base / "work", base / "nas")
    if initialize:
        response = server.initialize()
        assert response.status_code == 200, response.text
    return harness


@pytest.fixture(scope="session")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    comfy_env: devstack.ComfyEnv,
    comfy_tree: Path,
    moto: devstack.MotoServer,
) -> Iterator[ApiHarness]:
    harness = start_api(
        tmp_path_factory, comfy_env, comfy_tree, moto, "api",
        extra={"FUNART_ALLOW_PRIVATE_URLS": "true", "FUNART_WEBHOOK_SECRET": WEBHOOK_SECRET,
               "FUNART_WEBHOOK_ATTEMPTS": "3", "FUNART_WEBHOOK_BACKOFF_S": "0.05",
               "FUNART_PROGRESS_INTERVAL_S": "0.2"},
    )
    yield harness
    harness.server.stop()
