"""Cold start of the api function in `funart local`, phase by phase, beside ComfyUI's
own boot from an environment already on disk, in one run.

Phases of the api instance's first request after a publish: instance start (fresh
copy of the base environment, `funart serve api` up), snapshot restore, ComfyUI boot,
the first job. The baseline boots ComfyUI directly with the same interpreter and tree.

Usage (root): .venv/bin/python bench/cold_start.py
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402

WORKFLOW = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
}


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        funart = str(Path(sys.executable).parent / "funart")
        local = subprocess.Popen([funart, "local", "up", "--state", str(state)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert local.stdout is not None
        endpoints = json.loads(local.stdout.readline())
        try:
            phases = measure_api_cold_start(endpoints, state)
        finally:
            local.send_signal(signal.SIGINT)
            local.wait(300)
        baseline = comfyui_boot(Path(scratch))

    print("api function cold start in funart local (first request after a publish):")
    for name, seconds in phases.items():
        print(f"  {name:32s} {seconds:6.2f} s")
    print(f"ComfyUI's own boot, same tree and interpreter: {baseline:.2f} s")
    print(f"cold start / ComfyUI boot: {phases['total'] / baseline:.2f}")
    return 0


def measure_api_cold_start(endpoints: dict[str, str], state: Path) -> dict[str, float]:
    workspace, control, api = endpoints["workspace"], endpoints["control"], endpoints["api"]
    node = ROOT / "examples" / "custom_nodes" / "funart-demo-node"
    archive = state.parent / "node.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in node.rglob("*"):
            bundle.write(path, f"{node.name}/{path.relative_to(node)}")
    requests.post(workspace + "/api/workspace/nodes", params={"name": node.name},
                  data=archive.read_bytes(), headers={"Content-Type": "application/zip"},
                  timeout=600).raise_for_status()
    requests.post(endpoints["fc_api"] + "/_local/functions/funart-workspace/stop",
                  timeout=600).raise_for_status()
    requests.post(control + "/api/publish", json={}, timeout=600).raise_for_status()

    started = time.monotonic()
    response = requests.post(api + "/api/serverless/run", json=WORKFLOW, timeout=600)
    total = time.monotonic() - started
    response.raise_for_status()

    log = (state / "functions" / "funart-api" / "instance.log").read_text()
    restore = float(re.search(r"Restored snapshot \S+: .*'seconds': ([0-9.]+)", log).group(1))
    boot = float(re.search(r"ComfyUI ready: generation=1 after ([0-9.]+) s", log).group(1))
    job = response.json()["data"]["execution_time"]
    return {"snapshot restore": restore, "ComfyUI boot": boot, "first job": job,
            "instance start and HTTP hops": total - restore - boot - job, "total": total}


def comfyui_boot(scratch: Path) -> float:
    comfy = devstack.ComfyEnv.locate()
    io = scratch / "io"
    for name in ("input", "output", "temp", "user"):
        (io / name).mkdir(parents=True)
    port = devstack.free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [str(comfy.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--disable-auto-launch", "--input-directory", str(io / "input"),
         "--output-directory", str(io / "output"), "--temp-directory", str(io / "temp"),
         "--user-directory", str(io / "user"), "--database-url",
         f"sqlite:///{io / 'user' / 'comfyui.db'}", "--comfy-api-base", "http://127.0.0.1:9"],
        cwd=comfy.tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).ok:
                    return time.monotonic() - started
            except requests.RequestException:
                time.sleep(0.25)
    finally:
        devstack.stop_process(process)


if __name__ == "__main__":
    sys.exit(main())
