"""Handler overhead: POST /api/serverless/run against a minimal direct ComfyUI client.

One run, one ComfyUI: the api function (`funart serve api`) and a bare client
(raw POST /prompt + websocket + GET /view) take turns on the same trivial
workflow, so both see the same machine state. Prints p50/p95 of each and the
ratio of the handler (outputs inlined as base64, no OSS) to the direct client;
the OSS upload (moto on loopback) is measured as a third series, reported apart.

Usage: .venv/bin/python bench/latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402


def workflow(prefix: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


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


def handler_run(api_url: str, query: str) -> float:
    started = time.perf_counter()
    response = requests.post(
        f"{api_url}/api/serverless/run{query}", json=workflow("bench/handler"), timeout=60
    )
    response.raise_for_status()
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95_index = max(0, int(round(0.95 * len(ordered))) - 1)
    return {"p50_ms": statistics.median(ordered) * 1000, "p95_ms": ordered[p95_index] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description="Handler overhead against a direct client.")
    parser.add_argument("--runs", type=int, default=40, help="jobs per series (default 40)")
    args = parser.parse_args()

    comfy = devstack.ComfyEnv.locate()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        moto = devstack.MotoServer(log_path=base / "moto.log").start()
        moto.create_bucket("bench")
        env = devstack.api_environment(
            comfy_env=comfy, comfyui_dir=comfy.tree, work_dir=base / "work",
            nas_root=base / "nas", oss_endpoint=moto.endpoint, bucket="bench",
        )
        comfy_url = f"http://127.0.0.1:{env['FUNART_COMFYUI_PORT']}"
        api = devstack.ApiServer(env, base / "api.log").start()
        try:
            assert api.initialize().status_code == 200
            series = measure(api.url, comfy_url, args.runs)
        finally:
            api.stop()
            moto.stop()

    report(series, args.runs)
    return 0


def measure(api_url: str, comfy_url: str, runs: int) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {"direct": [], "handler": [], "handler_oss": []}
    # Warm-up: first requests pay for imports and connection set-up on both sides.
    for index in range(3):
        direct_run(comfy_url, -1 - index)
        handler_run(api_url, "?output_oss=false&output_base64=true")
        handler_run(api_url, "")
    for index in range(runs):
        series["direct"].append(direct_run(comfy_url, index))
        series["handler"].append(handler_run(api_url, "?output_oss=false&output_base64=true"))
        series["handler_oss"].append(handler_run(api_url, ""))
    return series


def report(series: dict[str, list[float]], runs: int) -> None:
    stats = {name: summary(samples) for name, samples in series.items()}
    direct, handler, with_oss = stats["direct"], stats["handler"], stats["handler_oss"]
    print(f"runs per series: {runs}; workflow: EmptyImage 64x64 -> SaveImage")
    for name, values in stats.items():
        print(f"  {name:12s} p50 {values['p50_ms']:7.1f} ms   p95 {values['p95_ms']:7.1f} ms")
    print(f"handler/direct p50 ratio: {handler['p50_ms'] / direct['p50_ms']:.2f}  (target <= 1.2)")
    print(f"handler/direct p95 ratio: {handler['p95_ms'] / direct['p95_ms']:.2f}")
    print(f"OSS upload + signing adds p50 {with_oss['p50_ms'] - handler['p50_ms']:.1f} ms "
          "(moto on loopback)")


if __name__ == "__main__":
    sys.exit(main())
