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
import statistics
import sys
import time

import requests
from stack import direct_run, percentile, running_stack, workflow


def handler_run(api_url: str, query: str) -> float:
    started = time.perf_counter()
    response = requests.post(
        f"{api_url}/api/serverless/run{query}", json=workflow("bench/handler"), timeout=60
    )
    response.raise_for_status()
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(samples) * 1000,
            "p95_ms": percentile(samples, 0.95) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description="Handler overhead against a direct client.")
    parser.add_argument("--runs", type=int, default=40, help="jobs per series (default 40)")
    args = parser.parse_args()

    with running_stack() as stack:
        series = measure(stack.api_url, stack.comfy_url, args.runs)
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
