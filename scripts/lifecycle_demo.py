"""The whole FunArt lifecycle on this machine, through `funart local up` and s.yaml.

workspace (cold start, install a custom node shipped with the repo, stop: snapshot
saved) -> control (publish the snapshot as an API version) -> api (sync runs: model-free,
the new node, text-to-image; an async task with its status) -> control (task status,
publish again, roll back). Outputs are downloaded into .demo/outputs/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402

DEMO = Path(os.environ.get("FUNART_DEMO_DIR", ROOT / ".demo"))
STATE = DEMO / "local"
NODE = ROOT / "examples" / "custom_nodes" / "funart-demo-node"
TINT = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 128, "height": 128, "batch_size": 1, "color": 3355443}},
    "2": {"class_type": "FunartDemoTint", "inputs": {"image": ["1", 0], "red": 1.0,
                                                      "green": 0.4, "blue": 0.1,
                                                      "strength": 0.7}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tint"}},
}


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "outputs").mkdir(parents=True)
    devstack.link_test_checkpoint(STATE / "nas")

    step("funart local up: every function of s.yaml on 127.0.0.1, OSS on moto")
    funart = str(Path(sys.executable).parent / "funart")
    with open(DEMO / "local.log", "w") as log:
        local = subprocess.Popen([funart, "local", "up", "--state", str(STATE)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=log, text=True)
    assert local.stdout is not None
    endpoints = json.loads(local.stdout.readline())
    print(json.dumps(endpoints, indent=2))
    try:
        run_lifecycle(endpoints)
    finally:
        step("Ctrl-C: /pre-stop on every instance, then everything stops")
        local.send_signal(signal.SIGINT)
        local.wait(300)
    step(f"Done. Outputs: {DEMO / 'outputs'}; logs: {DEMO / 'local.log'}, "
         f"{STATE / 'functions'}/*/instance.log")
    return 0


def run_lifecycle(endpoints: dict[str, str]) -> None:
    workspace, api, control = endpoints["workspace"], endpoints["api"], endpoints["control"]

    step("workspace: first request, cold start with /initialize (base environment)")
    show(call("GET", workspace + "/api/workspace/status"))

    step("workspace: install the custom node shipped in examples/custom_nodes")
    show(call("POST", workspace + "/api/workspace/nodes", params={"name": NODE.name},
              data=node_archive(), headers={"Content-Type": "application/zip"}))

    step("workspace: FC stops the instance; /pre-stop saves a dev snapshot on NAS")
    show(call("POST", endpoints["fc_api"] + "/_local/functions/funart-workspace/stop"))

    step("control: publish the snapshot as an API version (FC 3.0 SDK -> UpdateFunction)")
    first = call("POST", control + "/api/publish", json={"scaling": {"minInstances": 0}})
    show(first)

    for name, workflow in [("model-free", load("image-invert-blur.json")),
                           ("the workspace's custom node", TINT),
                           ("text-to-image", load("txt2img.json"))]:
        step(f"api: POST /api/serverless/run, {name}")
        result = call("POST", api + "/api/serverless/run", json=workflow)
        show(result, limit=1600)
        download(result)

    step("api: async task (X-Fc-Invocation-Type: Async), answered 202, then its status")
    task_id = f"demo-{int(time.time())}"
    response = requests.post(api + "/api/serverless/run", json=TINT, timeout=60, headers={
        "X-Fc-Invocation-Type": "Async", "x-fc-async-task-id": task_id})
    print(f"  HTTP {response.status_code}, x-fc-async-task-id: {task_id}")
    status: dict[str, Any] = {}
    for _ in range(200):
        # 404 until the delivered task writes its first status document.
        status = requests.get(api + "/api/serverless/status", params={"task_id": task_id},
                              timeout=60).json()
        if status.get("status") in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.3)
    show(status, limit=600)
    show(call("GET", control + f"/api/tasks/{task_id}"), limit=600)

    step("control: publish again, list versions, roll back to the first one")
    call("POST", control + "/api/publish", json={})
    show(call("GET", control + "/api/versions"))
    show(call("POST", control + "/api/rollback", json={"version": first["version"]}))


def call(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    response = requests.request(method, url, timeout=600, **kwargs)
    if response.status_code >= 400:
        raise SystemExit(f"{method} {url} failed with HTTP {response.status_code}: "
                         f"{response.text}")
    return dict(response.json())


def node_archive() -> bytes:
    archive = DEMO / "node.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in NODE.rglob("*"):
            bundle.write(path, f"{NODE.name}/{path.relative_to(NODE)}")
    return archive.read_bytes()


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "examples" / "workflows" / name).read_text()))


def download(result: dict[str, Any]) -> None:
    for entry in result["data"]["results"]:
        oss = entry["output"]["oss"]
        target = DEMO / "outputs" / oss["object"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(requests.get(oss["url"], timeout=60).content)
        print(f"  node {entry['node_id']}: oss://{oss['bucket']}/{oss['object']}")
        print(f"      saved to {shown(target)}")


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def show(document: dict[str, Any], limit: int = 1200) -> None:
    text = json.dumps(document, indent=2)
    print(text if len(text) <= limit else text[:limit] + "\n  …")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
