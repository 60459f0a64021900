"""Faults the api function must survive: dropped websockets, quiet nodes, OSS outages,
slow or failing ComfyUI starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from funart_runtime import devstack
from funart_runtime.comfy.client import ComfyClient
from funart_runtime.comfy.protocol import history_is_finished
from tests.conftest import ApiHarness, start_api
from tests.support import workflows as wf

pytestmark = pytest.mark.integration


class WebsocketCutter:
    """A TCP proxy on 127.0.0.1 that closes websocket connections after ``cut_after_s``."""

    def __init__(self, target_port: int, cut_after_s: float) -> None:
        self.target_port = target_port
        self.cut_after_s = cut_after_s
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        first = await reader.read(65536)
        upstream_writer.write(first)
        pumps = [asyncio.ensure_future(self._pump(reader, upstream_writer)),
                 asyncio.ensure_future(self._pump(upstream_reader, writer))]
        if first.startswith(b"GET /ws"):
            await asyncio.sleep(self.cut_after_s)
            self.cuts += 1
            for pump in pumps:
                pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        writer.close()
        upstream_writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_websocket_cut_mid_job_completes_from_history(api: ApiHarness) -> None:
    cutter = WebsocketCutter(int(api.server.env["FUNART_COMFYUI_PORT"]), cut_after_s=0.8)
    try:
        client = ComfyClient(f"http://127.0.0.1:{cutter.port}")
        workflow = wf.slow(steps=8, delay=0.4, prefix="cut/x")
        workflow["1"]["inputs"]["color"] = 0xABCDEF

        job = client.run(workflow, deadline_s=60)
    finally:
        cutter.close()

    assert cutter.cuts >= 1
    assert history_is_finished(job.history)
    assert job.history["status"]["status_str"] == "success"
    assert job.history["outputs"]["3"]["images"]


def test_quiet_node_longer_than_read_timeout(api: ApiHarness) -> None:
    workflow = wf.slow(steps=1, delay=3.5, prefix="quiet/x")
    workflow["1"]["inputs"]["color"] = 0x010203

    response = api.run(workflow)

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]["results"]) == 1


@pytest.fixture(scope="module")
def oss_down_api(tmp_path_factory: pytest.TempPathFactory, comfy_env: devstack.ComfyEnv,
                 comfy_tree: Path, moto: devstack.MotoServer) -> Iterator[ApiHarness]:
    """An instance whose OSS endpoint is a closed loopback port, not initialized by FC."""
    closed = devstack.free_port()
    harness = start_api(tmp_path_factory, comfy_env, comfy_tree, moto, "ossdown",
                        extra={"FUNART_OSS_ENDPOINT": f"http://127.0.0.1:{closed}"},
                        initialize=False)
    yield harness
    harness.server.stop()


def test_first_job_waits_for_comfyui_start(oss_down_api: ApiHarness) -> None:
    assert oss_down_api.health()["comfyui"] == "stopped"

    response = oss_down_api.run(wf.image_save(prefix="lazy/x"),
                                query="?output_oss=false&output_base64=true")

    assert response.status_code == 200, response.text
    assert oss_down_api.health()["comfyui"] == "ready"


def test_oss_outage_is_a_clear_error(oss_down_api: ApiHarness) -> None:
    started = time.monotonic()
    response = oss_down_api.run(wf.image_save(prefix="ossdown/x"))

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error_code"] == "STORAGE_ERROR"
    assert "FUNART_OSS_ENDPOINT" in body["error_message"]
    assert time.monotonic() - started < 30
    failures = [line for line in oss_down_api.log().splitlines()
                if "oss.put_object" in line and "failed" in line]
    assert len(failures) == 3


def test_failing_start_fails_waiting_job(tmp_path_factory: pytest.TempPathFactory,
                                         comfy_env: devstack.ComfyEnv, comfy_tree: Path,
                                         moto: devstack.MotoServer) -> None:
    harness = start_api(tmp_path_factory, comfy_env, comfy_tree, moto, "badstart",
                        extra={"FUNART_COMFYUI_ARGS": "--cpu --no-such-flag"}, initialize=False)
    try:
        started = time.monotonic()
        response = harness.run(wf.image_save())
        elapsed = time.monotonic() - started
    finally:
        harness.server.stop()

    assert response.status_code == 502, response.text
    assert response.json()["error_code"] == "COMFYUI_START_FAILED"
    assert "--no-such-flag" in response.json()["details"]["log_tail"]
    assert elapsed < 30
