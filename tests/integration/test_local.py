"""`funart local up`: the whole lifecycle of s.yaml on one machine, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import workflows as wf

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="funart local needs root for mount namespaces"),
]

ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 8


@dataclass
class Local:
    process: subprocess.Popen[str]
    endpoints: dict[str, str]
    state: Path

    def url(self, name: str) -> str:
        return self.endpoints[name]

    def instances(self) -> dict[str, Any]:
        return dict(requests.get(self.url("fc_api") + "/_local/instances", timeout=10).json())


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    state = tmp_path_factory.mktemp("local") / "state"
    funart = str(Path(sys.executable).parent / "funart")
    with open(state.parent / "local.log", "w") as log:
        process = subprocess.Popen(
            [funart, "local", "up", "--state", str(state), "--idle", str(IDLE_S)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, (state.parent / "local.log").read_text()
    yield Local(process, json.loads(line), state)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(120)


def demo_node_zip(tmp_path: Path) -> bytes:
    archive = tmp_path / "node.zip"
    node = ROOT / "examples" / "custom_nodes" / "funart-demo-node"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in node.rglob("*"):
            bundle.write(path, f"funart-demo-node/{path.relative_to(node)}")
    return archive.read_bytes()


TINT = {
    "1": wf.empty_image(24, 24),
    "2": {"class_type": "FunartDemoTint", "inputs": {"image": ["1", 0], "red": 1.0,
                                                      "green": 0.5, "blue": 0.0,
                                                      "strength": 0.8}},
    "3": wf.save_image("2", "local/tint"),
}


def test_workspace_cold_start_and_node(local: Local, tmp_path: Path) -> None:
    status = requests.get(local.url("workspace") + "/api/workspace/status", timeout=300)
    installed = requests.post(local.url("workspace") + "/api/workspace/nodes",
                              params={"name": "funart-demo-node"}, data=demo_node_zip(tmp_path),
                              headers={"Content-Type": "application/zip"}, timeout=300)

    assert status.status_code == 200, status.text
    assert status.json()["latest_snapshot"] is None
    assert installed.status_code == 201, installed.text
    assert installed.json()["classes"] == ["FunartDemoTint"]


def test_stopping_workspace_saves_snapshot(local: Local) -> None:
    stopped = requests.post(local.url("fc_api") + "/_local/functions/funart-workspace/stop",
                            timeout=600)

    assert stopped.status_code == 200
    assert stopped.json()["pre_stop"]["snapshot"].startswith("dev-")
    assert "funart-workspace" not in local.instances()


def test_publish_then_api_runs_the_node(local: Local) -> None:
    published = requests.post(local.url("control") + "/api/publish", json={}, timeout=120)
    response = requests.post(local.url("api") + "/api/serverless/run", json=TINT, timeout=300)

    assert published.status_code == 201, published.text
    assert published.json()["created"] is False
    assert response.status_code == 200, response.text
    [entry] = response.json()["data"]["results"]
    assert requests.get(entry["output"]["oss"]["url"], timeout=30).status_code == 200


def test_async_task_through_trigger(local: Local) -> None:
    headers = {"X-Fc-Invocation-Type": "Async", "x-fc-async-task-id": "local-task-1"}

    accepted = requests.post(local.url("api") + "/api/serverless/run", json=TINT,
                             headers=headers, timeout=60)
    duplicate = requests.post(local.url("api") + "/api/serverless/run", json=TINT,
                              headers=headers, timeout=60)
    document: dict = {}
    for _ in range(100):
        document = requests.get(local.url("api") + "/api/serverless/status",
                                params={"task_id": "local-task-1"}, timeout=30).json()
        if document.get("status") == "succeeded":
            break
        time.sleep(0.2)
    task = requests.get(local.url("control") + "/api/tasks/local-task-1", timeout=30)

    assert accepted.status_code == 202
    assert accepted.headers["x-fc-async-task-id"] == "local-task-1"
    assert duplicate.status_code == 409
    assert document["status"] == "succeeded"
    assert task.json()["fc"]["status"] == "Succeeded"
    assert task.json()["document"]["status"] == "succeeded"


def test_rollback_replaces_api_instance(local: Local) -> None:
    versions = requests.get(local.url("control") + "/api/versions", timeout=60).json()
    before = local.instances()["funart-api"]["pid"]

    republished = requests.post(local.url("control") + "/api/publish", json={}, timeout=120)
    rolled = requests.post(local.url("control") + "/api/rollback",
                           json={"version": versions["live"]}, timeout=120)
    after_rollback = local.instances()
    response = requests.post(local.url("api") + "/api/serverless/run", json=TINT, timeout=300)

    assert republished.status_code == 201
    assert rolled.status_code == 200, rolled.text
    assert "funart-api" not in after_rollback
    assert response.status_code == 200, response.text
    assert local.instances()["funart-api"]["pid"] != before


def fc_sdk(local: Local) -> Any:
    from alibabacloud_fc20230330.client import Client
    from alibabacloud_tea_openapi import models as openapi_models

    return Client(openapi_models.Config(
        access_key_id="test", access_key_secret="test", protocol="http", region_id="cn-hangzhou",
        endpoint=local.url("fc_api").split("://", 1)[1]))


def test_sdk_invoke_and_async_tasks(local: Local) -> None:
    from alibabacloud_fc20230330 import models as fc_models
    from alibabacloud_tea_util import models as util_models

    client = fc_sdk(local)
    body = json.dumps({"prompt": TINT}).encode()

    sync = client.invoke_function("funart-api", fc_models.InvokeFunctionRequest(body=body))
    queued = client.invoke_function_with_options(
        "funart-api", fc_models.InvokeFunctionRequest(body=body),
        fc_models.InvokeFunctionHeaders(x_fc_invocation_type="Async",
                                        x_fc_async_task_id="sdk-task-1"),
        util_models.RuntimeOptions())
    failing = client.invoke_function(
        "funart-api", fc_models.InvokeFunctionRequest(body=b'{"nodes": [], "links": []}'))
    task: dict = {}
    for _ in range(100):
        task = client.get_async_task("funart-api", "sdk-task-1",
                                     fc_models.GetAsyncTaskRequest()).body.to_map()
        if task["status"] in {"Succeeded", "Failed"}:
            break
        time.sleep(0.2)
    listed = client.list_async_tasks("funart-api", fc_models.ListAsyncTasksRequest(limit=50))

    assert json.loads(sync.body.read())["type"] == "serverless_api"
    assert queued.status_code == 202
    assert failing.headers["x-fc-error-type"] == "UnhandledInvocationError"
    assert task["status"] == "Succeeded"
    assert "sdk-task-1" in [t.task_id for t in listed.body.tasks]


def test_sdk_stop_async_task(local: Local) -> None:
    from alibabacloud_fc20230330 import models as fc_models
    from alibabacloud_tea_util import models as util_models

    client = fc_sdk(local)
    slow = {"1": wf.empty_image(), "2": wf.save_image("1", "stop/x")}
    client.invoke_function_with_options(
        "funart-api", fc_models.InvokeFunctionRequest(body=json.dumps(slow).encode()),
        fc_models.InvokeFunctionHeaders(x_fc_invocation_type="Async",
                                        x_fc_async_task_id="sdk-task-stop"),
        util_models.RuntimeOptions())

    stopped = client.stop_async_task("funart-api", "sdk-task-stop",
                                     fc_models.StopAsyncTaskRequest())
    task = client.get_async_task("funart-api", "sdk-task-stop",
                                 fc_models.GetAsyncTaskRequest()).body.to_map()

    assert stopped.status_code == 200
    assert task["status"] == "Stopped"


def test_idle_instances_stop(local: Local) -> None:
    deadline = time.monotonic() + IDLE_S + 30
    while local.instances() and time.monotonic() < deadline:
        time.sleep(1)

    assert local.instances() == {}


def test_ctrl_c_stops_everything(local: Local) -> None:
    requests.get(local.url("workspace") + "/api/workspace/status", timeout=300)
    assert "funart-workspace" in local.instances()

    local.process.send_signal(signal.SIGINT)

    assert local.process.wait(120) == 0
    # Instances run as `unshare ... <state>/functions/<name>/... funart serve <role>`.
    leftover = subprocess.run(["pgrep", "-f", "--", str(local.state / "functions")],
                              capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
    snapshots = list((local.state / "nas" / "funart" / "snapshots" / "manifests").glob("dev-*"))
    assert len(snapshots) == 2
