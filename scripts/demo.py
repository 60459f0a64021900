"""`make demo`: the whole lifecycle as root (scripts/lifecycle_demo.py), else the api function.

Without root (or with --api-only) this runs the api function's main job alone:

Starts a moto server on 127.0.0.1 as OSS, starts `funart serve api` with the real
ComfyUI, calls /initialize as FC would, runs each sample workflow (model-free, then
text-to-image with the project's random-weights checkpoint) through
POST /api/serverless/run, prints the result JSON and downloads every output
through its signed URL into .demo/outputs/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402

DEMO_DIR = ROOT / ".demo"
BUCKET = "funart-demo"
WORKFLOWS = {
    "model-free: image made, inverted, blurred, saved twice": "image-invert-blur.json",
    "text-to-image: SD 1.5-layout checkpoint with random weights, 64x64, 3 steps": "txt2img.json",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C")
    parser.add_argument("--api-only", action="store_true",
                        help="run only the api function, without funart local (no root needed)")
    args = parser.parse_args()

    # The whole lifecycle needs funart local, which needs root for mount namespaces.
    if os.geteuid() == 0 and not args.api_only and not args.keep:
        import lifecycle_demo

        return lifecycle_demo.main()

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    (DEMO_DIR / "outputs").mkdir(parents=True)
    comfy = devstack.ComfyEnv.locate()

    step("Starting a moto server on 127.0.0.1 as OSS")
    moto = devstack.MotoServer(log_path=DEMO_DIR / "moto.log").start()
    moto.create_bucket(BUCKET)
    # The api function reads models from NAS, as on FC; the demo's NAS is a local folder.
    devstack.link_test_checkpoint(DEMO_DIR / "nas")
    env = devstack.api_environment(
        comfy_env=comfy, comfyui_dir=comfy.tree, work_dir=DEMO_DIR / "work",
        nas_root=DEMO_DIR / "nas", oss_endpoint=moto.endpoint, bucket=BUCKET,
    )
    api = devstack.ApiServer(env, DEMO_DIR / "api.log")
    try:
        return run_demo(api, moto, args.keep)
    finally:
        api.stop()
        moto.stop()


def run_demo(api: devstack.ApiServer, moto: devstack.MotoServer, keep: bool) -> int:
    step(f"Starting the api function (funart serve api) on {api.url}")
    api.start()

    step("POST /initialize: starting ComfyUI 0.3.75 (about 10 s on 2 CPU cores)")
    started = time.monotonic()
    response = api.initialize()
    if response.status_code != 200:
        print(json.dumps(response.json(), indent=2))
        return 1
    print(f"  ComfyUI ready in {time.monotonic() - started:.1f} s")

    for title, name in WORKFLOWS.items():
        if not run_workflow(api, title, ROOT / "examples" / "workflows" / name):
            return 1

    step(f"Done. Outputs: {DEMO_DIR / 'outputs'}; server log: {DEMO_DIR / 'api.log'}")
    if keep:
        print(f"  api function: {api.url}   OSS (moto): {moto.endpoint}   Ctrl-C stops both")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def run_workflow(api: devstack.ApiServer, title: str, path: Path) -> bool:
    step(f"POST /api/serverless/run  {path.relative_to(ROOT)}  ({title})")
    started = time.monotonic()
    response = requests.post(
        f"{api.url}/api/serverless/run", data=path.read_bytes(), timeout=600,
        headers={"content-type": "application/json"},
    )
    elapsed = time.monotonic() - started
    document = response.json()
    print(json.dumps(document, indent=2))
    if response.status_code != 200:
        print(f"  failed with HTTP {response.status_code}")
        return False

    print(f"  HTTP 200 in {elapsed:.2f} s; outputs:")
    for entry in document["data"]["results"]:
        oss = entry["output"]["oss"]
        if not oss:
            continue
        target = DEMO_DIR / "outputs" / oss["object"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(requests.get(oss["url"], timeout=60).content)
        print(f"  node {entry['node_id']}: oss://{oss['bucket']}/{oss['object']}")
        print(f"      saved to {target.relative_to(ROOT)}")
    return True


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
