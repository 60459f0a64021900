"""The benchmarks' local stack: moto as OSS and one api instance with real ComfyUI."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402


@dataclass(frozen=True)
class Stack:
    api_url: str
    comfy_url: str


@contextlib.contextmanager
def running_stack(extra: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start moto and an initialized api instance; stop both on exit."""
    comfy = devstack.ComfyEnv.locate()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        moto = devstack.MotoServer(log_path=base / "moto.log").start()
        moto.create_bucket("bench")
        env = devstack.api_environment(
            comfy_env=comfy, comfyui_dir=comfy.tree, work_dir=base / "work",
            nas_root=base / "nas", oss_endpoint=moto.endpoint, bucket="bench", extra=extra,
        )
        api = devstack.ApiServer(env, base / "api.log")
        try:
            api.start()
            response = api.initialize()
            if response.status_code != 200:
                raise RuntimeError(f"/initialize failed: {response.text}")
            yield Stack(api.url, f"http://127.0.0.1:{env['FUNART_COMFYUI_PORT']}")
        finally:
            api.stop()
            moto.stop()


def workflow(prefix: str, width: int = 64) -> dict:
    """Build a trivial job: an empty image, saved once."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(fraction * len(ordered))) - 1)]


def direct_run(comfy_url: str, index: int) -> float:
    """Run one job the way a minimal client would, and return its latency in seconds."""
    started = time.perf_counter()
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(
        f"ws{comfy_url[4:]}/ws?clientId={client_id}", timeout=30
    )
    try:
        body = {"prompt": workflow(f"bench/direct-{index}"), "client_id": client_id}
        prompt_id = requests.post(f"{comfy_url}/prompt", json=body, timeout=30).json()["prompt_id"]
        while True:
            message = ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            data = event.get("data", {})
            if event["type"] == "executing" and data.get("node") is None \
                    and data.get("prompt_id") == prompt_id:
                break
    finally:
        ws.close()
    history = requests.get(f"{comfy_url}/history/{prompt_id}", timeout=30).json()[prompt_id]
    for image in history["outputs"]["2"]["images"]:
        requests.get(f"{comfy_url}/view", params=image, timeout=30).raise_for_status()
    return time.perf_counter() - started
