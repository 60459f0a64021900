"""Throughput of many trivial jobs through the api function against ComfyUI's own queue.

One run, one ComfyUI. M jobs are submitted with concurrency N twice: through
`POST /api/serverless/run` (outputs inlined, no OSS) and by a minimal direct client
(POST /prompt + websocket + GET /view). Prints jobs per second of each and their
ratio (target >= 0.9). Then measures what async status documents cost: the same
trivial job run sequentially as a sync call and as an async task (three status
writes to OSS on moto), p50 of each.

Usage: .venv/bin/python bench/throughput.py [--jobs M] [--concurrency N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
import uuid

import requests
from stack import direct_run, running_stack, workflow

INLINE = "?output_oss=false&output_base64=true"


def api_job(api_url: str, index: int, headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    response = requests.post(f"{api_url}/api/serverless/run{INLINE}",
                             json=workflow(f"tp/{index}", width=32 + index % 64),
                             headers=headers or {}, timeout=120)
    response.raise_for_status()
    return time.perf_counter() - started


def jobs_per_second(run_one, jobs: int, concurrency: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(run_one, range(jobs)))
    return jobs / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description="Throughput against ComfyUI's queue.")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per series (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel clients (default 8)")
    parser.add_argument("--runs", type=int, default=30, help="jobs per status series (30)")
    args = parser.parse_args()

    with running_stack({"FUNART_MAX_JOBS": str(args.concurrency + 8)}) as stack:
        jobs_per_second(lambda i: api_job(stack.api_url, i), 8, 4)  # warm-up
        direct = jobs_per_second(lambda i: direct_run(stack.comfy_url, i), args.jobs,
                                 args.concurrency)
        via_api = jobs_per_second(lambda i: api_job(stack.api_url, i), args.jobs,
                                  args.concurrency)
        sync_s = [api_job(stack.api_url, 1000 + i) for i in range(args.runs)]
        async_s = [api_job(stack.api_url, 2000 + i, {
            "X-Fc-Invocation-Type": "Async", "x-fc-async-task-id": f"bench-{uuid.uuid4().hex}",
        }) for i in range(args.runs)]

    print(f"{args.jobs} jobs, concurrency {args.concurrency}; EmptyImage -> SaveImage")
    print(f"  direct to ComfyUI's queue  {direct:7.1f} jobs/s")
    print(f"  through the api function   {via_api:7.1f} jobs/s")
    print(f"api/direct throughput ratio: {via_api / direct:.2f}  (target >= 0.9)")
    sync_p50, async_p50 = statistics.median(sync_s) * 1000, statistics.median(async_s) * 1000
    print(f"sequential p50: sync {sync_p50:.1f} ms, async with status documents "
          f"{async_p50:.1f} ms (+{async_p50 - sync_p50:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
