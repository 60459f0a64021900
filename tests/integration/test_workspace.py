"""The workspace function on real ComfyUI: base start, UI proxy, nodes, models, snapshots."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from funart_runtime import devstack
from funart_runtime.snapshots.store import SnapshotStore
from tests.conftest import ROOT
from tests.support import workflows as wf

pytestmark = pytest.mark.integration

DEMO_NODE = ROOT / "examples" / "custom_nodes" / "funart-demo-node"
DEP_NAME = "funart_demo_dep"


def build_wheel(directory: Path) -> Path:
    """Write a minimal pure-Python wheel of funart_demo_dep 1.0 by hand."""
    files = {
        f"{DEP_NAME}/__init__.py": b"GREETING = 'installed from the local index'\n",
        f"{DEP_NAME}-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: funart-demo-dep\nVersion: 1.0\n",
        f"{DEP_NAME}-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: funart-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{DEP_NAME}-1.0.dist-info/RECORD,,")
    path = directory / f"{DEP_NAME}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{DEP_NAME}-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


class StaticServer:
    """Serves a folder on 127.0.0.1 (package index, model files) with Range support.

    ``cut_once`` names a file whose first download stops after half its bytes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cut_once: set[str] = set()
        self.ranges: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = owner.root / self.path.lstrip("/").split("?")[0]
                if path.is_dir():
                    path = path / "index.html"
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if "Range" in self.headers:
                    owner.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "text/html" if path.suffix == ".html"
                                 else "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if path.name in owner.cut_once:
                    owner.cut_once.discard(path.name)
                    self.wfile.write(data[start:len(data) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(data[start:])

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class Workspace:
    server: devstack.WorkspaceServer
    url: str
    env: dict[str, str]
    nas: Path
    tree: Path
    venv: Path
    files: StaticServer
    base: Path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=120, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=300, **kwargs)

    def restart_server(self) -> None:
        # FC already called /pre-stop; the instance is simply gone.
        devstack.stop_process(self.server.proc)
        self.server = devstack.WorkspaceServer(self.env, self.base / "workspace.log").start()
        self.url = self.server.url


def make_mirror(base: Path) -> Path:
    """A git repository at <mirror>/acme/funart-demo-node, standing in for GitHub."""
    repo = base / "mirror" / "acme" / "funart-demo-node"
    shutil.copytree(DEMO_NODE, repo)
    (repo / "requirements.txt").write_text("funart-demo-dep==1.0\n")
    (repo / "__init__.py").write_text(
        (repo / "__init__.py").read_text().replace("import torch\n",
                                                   f"import torch\nimport {DEP_NAME}\n")
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "demo node"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    return base / "mirror"


def make_index(base: Path) -> Path:
    root = base / "files"
    package = root / "simple" / "funart-demo-dep"
    package.mkdir(parents=True)
    wheel = build_wheel(package)
    (package / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    (root / "simple" / "index.html").write_text('<a href="funart-demo-dep/">funart-demo-dep</a>\n')
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory,
              comfy_env: devstack.ComfyEnv) -> Iterator[Workspace]:
    base = tmp_path_factory.mktemp("workspace")
    tree = comfy_env.copy_tree(base / "ComfyUI")
    venv_python = devstack.make_overlay_venv(comfy_env, base / "venv")
    mirror = make_mirror(base)
    files = StaticServer(make_index(base))
    nas = base / "nas"
    devstack.link_test_checkpoint(nas)
    # The image build records the base environment's manifest; the test does the same.
    SnapshotStore(nas / "funart" / "snapshots").save("base", [tree, base / "venv"])

    env = devstack.api_environment(
        comfy_env=comfy_env, comfyui_dir=tree, work_dir=base / "work", nas_root=nas,
        oss_endpoint="", bucket="",
        extra={"FUNART_PYTHON": str(venv_python), "FUNART_VENV_DIR": str(base / "venv"),
               "FUNART_BASE_MANIFEST": "base", "FUNART_GITHUB_MIRROR": f"file://{mirror}/",
               "FUNART_PIP_INDEX_URL": f"{files.url}/simple/",
               "FUNART_ALLOW_PRIVATE_URLS": "true"},
    )
    server = devstack.WorkspaceServer(env, base / "workspace.log").start()
    space = Workspace(server, server.url, env, nas, tree, base / "venv", files, base)
    yield space
    space.server.stop()
    files.server.shutdown()


def test_first_start_runs_base_environment(workspace: Workspace) -> None:
    response = workspace.post("/initialize")

    assert response.status_code == 200, response.text
    assert response.json() == {"comfyui": "ready", "snapshot": None}
    status = workspace.get("/api/workspace/status").json()
    assert status["comfyui"] == "ready"
    assert status["latest_snapshot"] is None
    assert status["base_manifest"] == "base"


def test_ui_served_through_proxy(workspace: Workspace) -> None:
    page = workspace.get("/")
    stats = workspace.get("/system_stats")
    info = workspace.get("/api/object_info/EmptyImage")

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>ComfyUI</title>" in page.text
    assert stats.json()["system"]["comfyui_version"] == "0.3.75"
    assert "EmptyImage" in info.json()


def test_websocket_session_through_proxy(workspace: Workspace) -> None:
    client_id = uuid.uuid4().hex
    big_text = "x" * (5 * 1024 * 1024)
    workflow = {
        "1": wf.empty_image(33, 17),
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PrimitiveString", "inputs": {"value": big_text}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    ws = websocket.create_connection(f"ws{workspace.url[4:]}/ws?clientId={client_id}", timeout=60)
    try:
        response = workspace.post("/prompt", json={"prompt": workflow, "client_id": client_id})
        assert response.status_code == 200, response.text
        prompt_id = response.json()["prompt_id"]
        texts, binaries = [], []
        while True:
            frame = ws.recv()
            if isinstance(frame, bytes):
                binaries.append(frame)
                continue
            texts.append(frame)
            message = json.loads(frame)
            if message["type"] == "executing" and message["data"]["node"] is None \
                    and message["data"]["prompt_id"] == prompt_id:
                break
    finally:
        ws.close()

    assert max(len(text) for text in texts) > 5 * 1024 * 1024
    assert any(frame[:4] == b"\x00\x00\x00\x03" for frame in binaries)


def test_node_install_from_mirror(workspace: Workspace) -> None:
    response = workspace.post("/api/workspace/nodes", json={
        "url": "https://github.com/acme/funart-demo-node", "ref": "v1"})

    assert response.status_code == 201, response.text
    result = response.json()
    assert result["classes"] == ["FunartDemoTint"]
    assert result["requirements_installed"] is True
    assert len(result["commit"]) == 40
    assert list(workspace.venv.glob(f"lib/python3.*/site-packages/{DEP_NAME}"))
    info = workspace.get("/object_info/FunartDemoTint").json()
    assert info["FunartDemoTint"]["python_module"] == "custom_nodes.funart-demo-node"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [({"url": "ftp://x/y"}, 400, "INVALID_NODE_SOURCE"),
     ({"url": "https://github.com/acme/x", "ref": "--upload-pack=evil"}, 400, "INVALID_NODE_SOURCE"),
     ({"url": "https://github.com/acme/missing-repo"}, 502, "NODE_CLONE_FAILED"),
     ({"url": "https://github.com/acme/funart-demo-node"}, 409, "NODE_EXISTS"),
     ({}, 400, "INVALID_PARAMETER")],
)
def test_node_install_errors(workspace: Workspace, body: dict, status: int, code: str) -> None:
    response = workspace.post("/api/workspace/nodes", json=body)

    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code


def test_node_archive_rejects_traversal(workspace: Workspace) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escape.py", "print('no')\n")

    response = workspace.post("/api/workspace/nodes?name=evil", data=archive.getvalue(),
                              headers={"Content-Type": "application/zip"})

    assert response.status_code == 400
    assert response.json()["error_code"] == "UNSAFE_ARCHIVE"
    assert not (workspace.tree / "custom_nodes" / "evil").exists()
    assert not (workspace.tree / "escape.py").exists()


def test_model_download_resumes_and_checks(workspace: Workspace) -> None:
    data = bytes(range(256)) * 4096
    (workspace.files.root / "lora.safetensors").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    workspace.files.cut_once.add("lora.safetensors")
    body = {"url": f"{workspace.files.url}/lora.safetensors", "folder": "loras", "sha256": digest}

    first = workspace.post("/api/workspace/models", json=body)
    part = workspace.nas / "models" / "loras" / "lora.safetensors.part"
    assert first.status_code == 502, first.text
    assert first.json()["error_code"] == "MODEL_DOWNLOAD_INTERRUPTED"
    assert 0 < part.stat().st_size < len(data)

    second = workspace.post("/api/workspace/models", json=body)

    assert second.status_code == 201, second.text
    assert second.json()["source"] == "download"
    assert workspace.files.ranges[-1] == f"bytes={len(data) // 2}-"
    assert (workspace.nas / "models" / "loras" / "lora.safetensors").read_bytes() == data
    assert not part.exists()
    listed = workspace.get("/object_info/LoraLoader").json()["LoraLoader"]["input"]["required"]
    assert "lora.safetensors" in listed["lora_name"][0]


def test_model_checksum_mismatch_leaves_nothing(workspace: Workspace) -> None:
    (workspace.files.root / "bad.safetensors").write_bytes(b"not what you expected")
    body = {"url": f"{workspace.files.url}/bad.safetensors", "folder": "loras",
            "sha256": "0" * 64}

    response = workspace.post("/api/workspace/models", json=body)

    assert response.status_code == 400
    assert response.json()["error_code"] == "CHECKSUM_MISMATCH"
    assert not list((workspace.nas / "models" / "loras").glob("bad*"))


def test_model_from_precache_and_upload(workspace: Workspace) -> None:
    data = b"cached model bytes"
    digest = hashlib.sha256(data).hexdigest()
    cache = workspace.nas / "funart" / "model-cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / digest).write_bytes(data)

    cached = workspace.post("/api/workspace/models", json={
        "url": f"{workspace.files.url}/never-fetched.safetensors", "folder": "vae",
        "sha256": digest})
    uploaded = requests.put(f"{workspace.url}/api/workspace/models/upscale_models/up.pth",
                            params={"sha256": hashlib.sha256(b"u" * 100).hexdigest()},
                            data=b"u" * 100, timeout=60)

    assert cached.status_code == 201, cached.text
    assert cached.json()["source"] == "cache"
    assert (workspace.nas / "models" / "vae" / "never-fetched.safetensors").read_bytes() == data
    assert uploaded.status_code == 201, uploaded.text
    assert (workspace.nas / "models" / "upscale_models" / "up.pth").read_bytes() == b"u" * 100


@pytest.mark.parametrize("path", ["/api/workspace/models/..%2Fx/a.bin", "/api/workspace/models/loras/..a"])
def test_model_upload_bad_path(workspace: Workspace, path: str) -> None:
    response = requests.put(workspace.url + path, data=b"x", timeout=30)

    assert response.status_code in (400, 404)
    assert not (workspace.nas / "models" / "x").exists()


def test_checkpoint_download_then_txt2img(workspace: Workspace) -> None:
    source = devstack.test_checkpoint_path()
    served = workspace.files.root / "checkpoints" / "remote-sd15.safetensors"
    served.parent.mkdir(exist_ok=True)
    served.symlink_to(source)
    pid_before = workspace.get("/api/workspace/status").json()["comfyui_pid"]

    response = workspace.post("/api/workspace/models", json={
        "url": f"{workspace.files.url}/checkpoints/remote-sd15.safetensors",
        "folder": "checkpoints", "sha256": "68cdaf5d8003572526ccdf84b0338d80e3cbcd131b30776434733fe93def53b5"})

    assert response.status_code == 201, response.text
    workflow = wf.example("txt2img.json")
    workflow["4"]["inputs"]["ckpt_name"] = "remote-sd15.safetensors"
    queued = workspace.post("/prompt", json={"prompt": workflow, "client_id": "t"})
    assert queued.status_code == 200, queued.text
    prompt_id = queued.json()["prompt_id"]
    history: dict = {}
    for _ in range(240):
        history = workspace.get(f"/history/{prompt_id}").json()
        if history:
            break
        threading.Event().wait(0.5)
    assert history[prompt_id]["status"]["status_str"] == "success"
    assert workspace.get("/api/workspace/status").json()["comfyui_pid"] == pid_before


def test_save_then_restore_on_new_instance(workspace: Workspace) -> None:
    saved = workspace.post("/api/workspace/snapshots")
    assert saved.status_code == 201, saved.text
    name = saved.json()["name"]
    listed = [info["name"] for info in workspace.get("/api/workspace/snapshots").json()["snapshots"]]
    assert name in listed

    stopped = workspace.get("/pre-stop")
    assert stopped.status_code == 200, stopped.text
    latest = stopped.json()["snapshot"]
    assert latest.startswith("dev-")
    # A fresh instance starts from the image: the node and its package are gone.
    shutil.rmtree(workspace.tree / "custom_nodes" / "funart-demo-node")
    for path in workspace.venv.glob(f"lib/python3.*/site-packages/{DEP_NAME}*"):
        shutil.rmtree(path)

    workspace.restart_server()
    response = workspace.post("/initialize")

    assert response.status_code == 200, response.text
    assert response.json()["snapshot"] == latest
    assert "FunartDemoTint" in workspace.get("/object_info/FunartDemoTint").json()
    assert (workspace.tree / "custom_nodes" / "funart-demo-node" / "requirements.txt").is_file()
