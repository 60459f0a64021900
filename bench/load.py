"""Bounded load test: R requests at concurrency C against one api instance on loopback.

Every request must complete or get 429 with Retry-After; each completed response
must hold exactly its own output (the PNG size encodes the request's parameters);
ComfyUI's memory and the open files of both processes must not grow across the run.
Runs with FUNART_MAX_JOBS below C, so the 429 path is exercised too.

Usage: .venv/bin/python bench/load.py [--requests R] [--concurrency C] [--max-jobs J]
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import os
import struct
import subprocess
import sys
import time

import requests
from stack import running_stack, workflow


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pid_of(pattern: str) -> int:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return int(found.split()[0])


def one_request(api_url: str, index: int) -> tuple[str, float]:
    width, height = 16 + index % 97, 16 + index % 13
    body = workflow(f"load/{index}", width=width)
    body["1"]["inputs"]["height"] = height
    started = time.perf_counter()
    response = requests.post(f"{api_url}/api/serverless/run?output_oss=false&output_base64=true",
                             json=body, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code == 429:
        assert 1 <= int(response.headers["Retry-After"]) <= 60, response.headers
        return "429", elapsed
    if response.status_code != 200:
        return f"HTTP {response.status_code}", elapsed
    [entry] = response.json()["data"]["results"]
    png = base64.b64decode(entry["output"]["base64"]["content"])
    if struct.unpack(">II", png[16:24]) != (width, height):
        return "MIXED", elapsed
    return "ok", elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description="Bounded load test on loopback.")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-jobs", type=int, default=12, help="FUNART_MAX_JOBS (default 12)")
    args = parser.parse_args()

    with running_stack({"FUNART_MAX_JOBS": str(args.max_jobs)}) as stack:
        comfy_port = stack.comfy_url.rsplit(":", 1)[1]
        api_port = stack.api_url.rsplit(":", 1)[1]
        comfy_pid = pid_of(f"main.py --listen 127.0.0.1 --port {comfy_port}")
        server_pid = pid_of(f"funart serve api --host 127.0.0.1 --port {api_port}")
        bad: dict[str, int] = {}
        # Round 1 warms up: worker threads open their keep-alive connections once.
        for round_number in (1, 2, 3):
            before = (rss_mb(comfy_pid), open_files(comfy_pid), open_files(server_pid))
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                outcomes = list(pool.map(lambda i: one_request(stack.api_url, i),
                                         range(args.requests)))
            wall = time.perf_counter() - started
            time.sleep(1.0)
            after = (rss_mb(comfy_pid), open_files(comfy_pid), open_files(server_pid))

            counts = collections.Counter(outcome for outcome, _ in outcomes)
            print(f"round {round_number}: {args.requests} requests, concurrency "
                  f"{args.concurrency}, FUNART_MAX_JOBS {args.max_jobs}: {dict(counts)} "
                  f"in {wall:.1f} s")
            print(f"  ComfyUI RSS {before[0]:.0f} -> {after[0]:.0f} MB; open files: ComfyUI "
                  f"{before[1]} -> {after[1]}, api server {before[2]} -> {after[2]}")
            bad.update({k: v for k, v in counts.items() if k not in {"ok", "429"}})

    print("PASS" if not bad else f"FAIL: {bad}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
