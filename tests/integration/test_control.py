"""The control function with the real FC 3.0 SDK against the local FC control API, and
a published version restored by a new api instance."""

from __future__ import annotations

import asyncio
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from funart_runtime import devstack
from funart_runtime.local.fc_api import LocalFcApi
from funart_runtime.snapshots.store import SnapshotStore
from tests.conftest import BUCKET, ApiHarness, start_api
from tests.support import workflows as wf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_NODE = ROOT / "examples" / "custom_nodes" / "funart-demo-node"
WORKSPACE_FUNCTION = {
    "functionName": "funart-workspace", "runtime": "custom-container",
    "customContainerConfig": {"image": "registry.example/funart:1", "port": 9000,
                              "command": ["funart", "serve", "workspace"]},
    "role": "acs:ram::123:role/funart", "nasConfig": {"userId": 0, "groupId": 0, "mountPoints": [
        {"serverAddr": "nas.example:/", "mountDir": "/mnt/auto"}]},
    "vpcConfig": {"vpcId": "vpc-1", "vSwitchIds": ["vsw-1"], "securityGroupId": "sg-1"},
    "gpuConfig": {"gpuType": "fc.gpu.ada.1", "gpuMemorySize": 49152},
    "environmentVariables": {"FUNART_NAS_ROOT": "/mnt/auto", "FUNART_GITHUB_MIRROR": "x",
                             "FUNART_OSS_BUCKET": "b"},
    "instanceLifecycleConfig": {"initializer": {"handler": "initialize", "timeout": 900}},
}


class FcApiThread:
    """The local FC control API served from a thread of the test process."""

    def __init__(self) -> None:
        self.api = LocalFcApi()
        self.port = devstack.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.api.app())
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        self.loop.run_forever()


@dataclass
class Control:
    server: devstack.ApiServer
    url: str
    fc: LocalFcApi
    store: SnapshotStore
    tree: Path
    venv: Path
    nas: Path

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, timeout=60, **kwargs)


class ControlServer(devstack.ApiServer):
    role = "control"


class SlsStandIn:
    """SLS's GetLogs on 127.0.0.1:80: the SDK cannot use another port for an IP endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "host": self.headers["Host"],
                                       "body": body})
                data = json.dumps({"meta": {"progress": "Complete", "count": 1}, "data": [
                    {"__time__": "1796400000", "functionName": "funart-api",
                     "message": "Job succeeded: 1 output(s)"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def sls() -> Iterator[SlsStandIn]:
    stand_in = SlsStandIn()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory, comfy_env: devstack.ComfyEnv,
            moto: devstack.MotoServer) -> Iterator[Control]:
    base = tmp_path_factory.mktemp("control")
    tree = comfy_env.copy_tree(base / "ComfyUI")
    devstack.make_overlay_venv(comfy_env, base / "venv")
    fc = FcApiThread()
    env = devstack.api_environment(
        comfy_env=comfy_env, comfyui_dir=tree, work_dir=base / "work", nas_root=base / "nas",
        oss_endpoint=moto.endpoint, bucket=BUCKET,
        extra={"FUNART_FC_ENDPOINT": fc.endpoint, "FC_REGION": "cn-hangzhou",
               "FUNART_API_FUNCTION": "funart-api",
               "FUNART_WORKSPACE_FUNCTION": "funart-workspace",
               "FUNART_SLS_ENDPOINT": "127.0.0.1", "FUNART_SLS_PROJECT": "funart-logs",
               "FUNART_SLS_LOGSTORE": "functions"},
    )
    server = ControlServer(env, base / "control.log").start()
    store = SnapshotStore(base / "nas" / "funart" / "snapshots")
    yield Control(server, server.url, fc.api, store, tree, base / "venv", base / "nas")
    server.stop()
    fc.loop.call_soon_threadsafe(fc.loop.stop)


def test_publish_without_snapshot(control: Control) -> None:
    response = control.call("POST", "/api/publish", json={})

    assert response.status_code == 404
    assert response.json()["error_code"] == "SNAPSHOT_NOT_FOUND"


def test_publish_without_any_function(control: Control) -> None:
    control.store.save("dev-20260101T000000000000Z", [control.tree, control.venv])

    response = control.call("POST", "/api/publish", json={})

    assert response.status_code == 404
    assert response.json()["error_code"] == "FUNCTION_NOT_FOUND"


def test_publish_creates_api_function(control: Control) -> None:
    control.fc.functions["funart-workspace"] = dict(WORKSPACE_FUNCTION,
                                                     functionArn="acs:fc:x:functions/ws")
    # The workspace adds a custom node, then saves: this is what gets published.
    shutil.copytree(DEMO_NODE, control.tree / "custom_nodes" / "funart-demo-node")
    control.store.save("dev-20260102T000000000000Z", [control.tree, control.venv])

    response = control.call("POST", "/api/publish", json={
        "spec": {"instanceConcurrency": 4, "gpuMemorySize": 24576},
        "scaling": {"minInstances": 1}})

    assert response.status_code == 201, response.text
    result = response.json()
    assert result["created"] is True
    assert result["snapshot"] == "dev-20260102T000000000000Z"
    created = control.fc.functions["funart-api"]
    assert created["environmentVariables"]["FUNART_SNAPSHOT"] == result["version"]
    assert "FUNART_GITHUB_MIRROR" not in created["environmentVariables"]
    assert created["environmentVariables"]["FUNART_OSS_BUCKET"] == "b"
    assert created["customContainerConfig"]["command"] == ["funart", "serve", "api"]
    assert created["nasConfig"] == WORKSPACE_FUNCTION["nasConfig"]
    assert created["role"] == WORKSPACE_FUNCTION["role"]
    assert created["instanceConcurrency"] == 4
    assert created["gpuConfig"] == {"gpuType": "fc.gpu.ada.1", "gpuMemorySize": 24576}
    assert control.fc.async_configs["funart-api"] == {"asyncTask": True}
    assert control.fc.scaling_configs["funart-api"]["minInstances"] == 1


def test_publish_again_updates_and_lists_versions(control: Control) -> None:
    first_live = control.fc.functions["funart-api"]["environmentVariables"]["FUNART_SNAPSHOT"]

    response = control.call("POST", "/api/publish", json={"async": False})
    versions = control.call("GET", "/api/versions").json()

    assert response.status_code == 201, response.text
    second = response.json()["version"]
    assert response.json()["created"] is False
    assert control.fc.updates[-1] == "funart-api"
    assert control.fc.async_configs["funart-api"] == {"asyncTask": False}
    assert versions["live"] == second
    listed = {v["name"]: v["live"] for v in versions["versions"]}
    assert listed == {first_live: False, second: True}
    published_at = {v["created_at"] for v in versions["versions"]}
    assert len(published_at) == 2


def test_rollback_and_delete(control: Control) -> None:
    versions = control.call("GET", "/api/versions").json()
    old = next(v["name"] for v in versions["versions"] if not v["live"])
    live = versions["live"]

    refused = control.call("DELETE", f"/api/versions/{live}")
    rolled = control.call("POST", "/api/rollback", json={"version": old})
    deleted = control.call("DELETE", f"/api/versions/{live}")

    assert refused.status_code == 409
    assert refused.json()["error_code"] == "VERSION_LIVE"
    assert rolled.status_code == 200, rolled.text
    assert control.fc.functions["funart-api"]["environmentVariables"]["FUNART_SNAPSHOT"] == old
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == live
    assert live not in {v["name"] for v in control.call("GET", "/api/versions").json()["versions"]}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [("POST", "/api/rollback", {"version": "dev-x"}, 400, "INVALID_VERSION"),
     ("POST", "/api/rollback", {"version": "api-19990101T000000000000Z"}, 404, "VERSION_NOT_FOUND"),
     ("POST", "/api/publish", {"spec": {"gpus": 8}}, 400, "INVALID_PARAMETER"),
     ("POST", "/api/publish", {"snapshot": "dev-missing"}, 404, "SNAPSHOT_NOT_FOUND"),
     ("POST", "/api/publish", [1], 400, "INVALID_JSON"),
     ("GET", "/api/tasks/..%2Fx", None, 400, "INVALID_TASK_ID"),
     ("GET", "/api/tasks/never-ran", None, 404, "TASK_NOT_FOUND")],
)
def test_control_errors(control: Control, method: str, path: str, body: Any, status: int,
                        code: str) -> None:
    response = control.call(method, path, json=body)

    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code


def test_task_merges_fc_and_oss(control: Control) -> None:
    control.fc.tasks.setdefault("funart-api", {})["t-merge"] = {
        "taskId": "t-merge", "status": "Running", "startedTime": 1}

    response = control.call("GET", "/api/tasks/t-merge")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "running"
    assert response.json()["fc"]["taskId"] == "t-merge"
    assert response.json()["document"] is None


def test_published_version_runs_on_new_api_instance(
    control: Control, tmp_path_factory: pytest.TempPathFactory, comfy_env: devstack.ComfyEnv,
    moto: devstack.MotoServer,
) -> None:
    version = control.fc.functions["funart-api"]["environmentVariables"]["FUNART_SNAPSHOT"]
    # A new api instance starts from the image: the workspace's node is not there.
    shutil.rmtree(control.tree / "custom_nodes" / "funart-demo-node")
    harness: ApiHarness = start_api(
        tmp_path_factory, comfy_env, control.tree, moto, "published",
        extra={"FUNART_SNAPSHOT": version, "FUNART_NAS_ROOT": str(control.nas),
               "FUNART_PYTHON": str(control.venv / "bin" / "python")},
    )
    try:
        workflow = {
            "1": wf.empty_image(16, 16),
            "2": {"class_type": "FunartDemoTint", "inputs": {"image": ["1", 0], "red": 1.0,
                                                              "green": 0.0, "blue": 0.0,
                                                              "strength": 1.0}},
            "3": wf.save_image("2", "published/x"),
        }
        response = harness.run(workflow)
    finally:
        harness.server.stop()

    assert response.status_code == 200, response.text
    assert (control.tree / "custom_nodes" / "funart-demo-node" / "__init__.py").is_file()


def test_logs_query_sls(control: Control, sls: SlsStandIn) -> None:
    response = control.call("GET", "/api/logs", params={
        "request_id": "req-42", "from": "1796390000", "to": "1796400100", "limit": "5"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["logs"] == [{"functionName": "funart-api", "message": "Job succeeded: 1 output(s)",
                             "__time__": 1796400000}]
    [sent] = sls.requests
    assert sent["host"] == "funart-logs.127.0.0.1"
    assert sent["path"] == "/logstores/functions/logs"
    assert sent["body"]["query"] == 'functionName: "funart-api" and "req-42"'
    assert (sent["body"]["from"], sent["body"]["to"], sent["body"]["line"]) == (1796390000, 1796400100, 5)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"from": "x"}, {"from": "10", "to": "5"}])
def test_logs_bad_parameters(control: Control, params: dict[str, str]) -> None:
    response = control.call("GET", "/api/logs", params=params)

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER"
