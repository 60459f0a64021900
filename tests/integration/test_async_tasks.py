"""Async tasks: status documents in OSS, redelivery, cancel, SSE progress and webhooks."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from funart_runtime import devstack
from tests.conftest import WEBHOOK_SECRET, ApiHarness, start_api
from tests.support import media
from tests.support import workflows as wf

pytestmark = pytest.mark.integration


def new_task_id() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


def wait_for_status(api: ApiHarness, task_id: str, wanted: set[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    seen: dict = {}
    while time.monotonic() < deadline:
        response = api.status(task_id)
        if response.status_code == 200:
            seen = response.json()
            if seen["status"] in wanted:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {wanted}; last: {seen}")


@pytest.fixture(scope="module")
def second_api(tmp_path_factory: pytest.TempPathFactory, comfy_env: devstack.ComfyEnv,
               comfy_tree: Path, moto: devstack.MotoServer) -> Iterator[ApiHarness]:
    """A second instance on the same OSS, never initialized: it reads task state from OSS only."""
    harness = start_api(tmp_path_factory, comfy_env, comfy_tree, moto, "second", initialize=False)
    yield harness
    harness.server.stop()


def test_async_task_status_to_succeeded(api: ApiHarness) -> None:
    task_id = new_task_id()
    states: list[str] = []
    progress: list[dict] = []

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        delivery = pool.submit(api.run_async, wf.slow(steps=6, delay=0.4, prefix="async/x"), task_id)
        while not delivery.done():
            response = api.status(task_id)
            if response.status_code == 200:
                states.append(response.json()["status"])
                progress.append(response.json()["progress"])
            time.sleep(0.1)
        assert delivery.result().status_code == 200, delivery.result().text

    document = api.status(task_id).json()
    assert document["status"] == "succeeded"
    assert document["task_id"] == task_id
    assert document["created_at"] <= document["updated_at"]
    assert "running" in states
    assert any(p["node"] == "2" and p["max"] == 6 and 0 < p["value"] <= 6 for p in progress)
    [entry] = document["result"]["data"]["results"]
    assert entry["output"]["oss"]["object"].startswith(f"funart/tasks/{task_id}/")
    image = requests.get(entry["output"]["oss"]["url"], timeout=10).content
    assert media.png_size(image) == (64, 48)


def test_redelivered_task_not_run_twice(api: ApiHarness) -> None:
    task_id = new_task_id()
    first = api.run_async(wf.image_save(prefix="redeliver/x"), task_id)
    second = api.run_async(wf.image_save(prefix="redeliver/x"), task_id)

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert "Task already succeeded" in api.log()


def test_status_from_second_instance(api: ApiHarness, second_api: ApiHarness) -> None:
    task_id = new_task_id()
    assert api.run_async(wf.image_save(), task_id).status_code == 200

    response = second_api.status(task_id)

    assert response.status_code == 200, response.text
    assert response.json() == api.status(task_id).json()
    assert second_api.health()["comfyui"] == "stopped"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("", 400, "MISSING_TASK_ID"), ("?task_id=../etc", 400, "INVALID_TASK_ID"),
     ("?task_id=never-submitted", 404, "TASK_NOT_FOUND")],
)
def test_status_bad_ids(api: ApiHarness, query: str, status: int, code: str) -> None:
    response = requests.get(f"{api.url}/api/serverless/status{query}", timeout=10)

    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code


def test_cancel_running_job(api: ApiHarness) -> None:
    task_id = new_task_id()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        delivery = pool.submit(api.run_async, wf.slow(steps=40, delay=0.25, prefix="cancel/x"), task_id)
        wait_for_status(api, task_id, {"running"})
        cancelled = api.cancel(task_id)
        response = delivery.result(timeout=60)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert response.status_code == 409
    assert response.json()["error_code"] == "JOB_CANCELLED"
    assert api.status(task_id).json()["status"] == "cancelled"
    assert "Cancel requested; interrupting the prompt" in api.log()
    follow_up = api.run(wf.image_save(prefix="after/cancel"))
    assert follow_up.status_code == 200, follow_up.text


def test_cancel_queued_job_while_other_runs(api: ApiHarness) -> None:
    running_id, queued_id = new_task_id(), new_task_id()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(api.run_async, wf.slow(steps=8, delay=0.4, prefix="first/x"), running_id)
        wait_for_status(api, running_id, {"running"})
        queued = pool.submit(api.run_async, wf.slow(steps=8, delay=0.4, prefix="second/x"), queued_id)
        time.sleep(0.5)
        assert wait_for_status(api, queued_id, {"queued"}, timeout_s=5)["status"] == "queued"
        cancelled = api.cancel(queued_id)
        queued_response = queued.result(timeout=60)
        running_response = running.result(timeout=60)

    assert cancelled.json()["status"] == "cancelled"
    assert queued_response.status_code == 409
    assert "waited in ComfyUI's queue" in queued_response.json()["error_message"]
    assert running_response.status_code == 200, running_response.text
    assert api.status(running_id).json()["status"] == "succeeded"


def test_cancel_through_another_instance(api: ApiHarness, second_api: ApiHarness) -> None:
    task_id = new_task_id()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        delivery = pool.submit(api.run_async, wf.slow(steps=40, delay=0.25, prefix="remote/x"), task_id)
        wait_for_status(api, task_id, {"running"})
        requested = second_api.cancel(task_id)
        response = delivery.result(timeout=60)

    assert requested.status_code == 202, requested.text
    assert requested.json()["cancel_requested"] is True
    assert response.status_code == 409
    assert api.status(task_id).json()["status"] == "cancelled"


def test_cancel_finished_and_unknown(api: ApiHarness) -> None:
    task_id = new_task_id()
    assert api.run_async(wf.image_save(), task_id).status_code == 200

    finished = api.cancel(task_id)
    unknown = api.cancel("no-such-task")

    assert finished.status_code == 409
    assert finished.json()["error_code"] == "TASK_ALREADY_FINISHED"
    assert unknown.status_code == 404


def read_events(response: requests.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_stream_progress_then_result(api: ApiHarness) -> None:
    workflow = wf.slow(steps=3, delay=0.2, prefix="sse/x")
    # A colour no other test uses, so ComfyUI's cache skips no node.
    workflow["1"]["inputs"]["color"] = 0x123456
    response = api.run(workflow, query="?stream=true")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = read_events(response)
    names = [name for name, _ in events]
    assert names[0] == "started"
    assert names[-1] == "result"
    assert events[-1][1]["type"] == "serverless_api"
    progress = [data for name, data in events if name == "progress"]
    assert [(p["node"], p["value"], p["max"]) for p in progress] == [("2", 1, 3), ("2", 2, 3), ("2", 3, 3)]
    assert ("node_start", "2") in [(name, data.get("node")) for name, data in events]
    done = [data["node"] for name, data in events if name == "node_done"]
    assert done == ["1", "2", "3"]
    assert events[-2][1]["nodes_done"] == 3
    assert events[-2][1]["nodes_total"] == 3


def test_stream_error_is_last_event(api: ApiHarness) -> None:
    response = api.run(wf.failing("stream failure"), query="?stream=true")

    name, data = read_events(response)[-1]
    assert name == "error"
    assert data["error_code"] == "EXECUTION_FAILED"


def test_stream_disconnect_does_not_cancel(api: ApiHarness) -> None:
    task_id = new_task_id()
    with requests.post(f"{api.url}/api/serverless/run?stream=true", stream=True, timeout=60,
                       data=json.dumps(wf.slow(steps=6, delay=0.3, prefix="gone/x")),
                       headers={"x-fc-request-id": task_id}) as response:
        next(response.iter_lines())
    # The sync job has no OSS status document, but this instance tracks it while it runs.
    running = api.status(task_id)
    assert running.status_code == 200
    assert running.json()["status"] in {"queued", "running"}
    deadline = time.monotonic() + 30
    while api.status(task_id).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"request_id={task_id}" in api.log()
    assert any("Job succeeded" in line and task_id in line for line in api.log().splitlines())


class Receiver:
    """A webhook receiver on 127.0.0.1 that records requests and responds with a set status."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver(200)
    yield server
    server.close()


def test_webhook_signed_delivery(api: ApiHarness, receiver: Receiver) -> None:
    task_id = new_task_id()
    response = api.run_async({"prompt": wf.image_save(), "webhook_url": receiver.url}, task_id)

    assert response.status_code == 200, response.text
    [(headers, body)] = receiver.requests
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-funart-signature"] == f"sha256={expected}"
    assert headers["x-funart-task-id"] == task_id
    assert json.loads(body) == response.json()
    webhook = api.status(task_id).json()["webhook"]
    assert webhook == {"url": receiver.url, "delivered": True, "attempts": 1, "status_code": 200}


def test_webhook_failure_recorded(api: ApiHarness, receiver: Receiver) -> None:
    receiver.status = 500
    task_id = new_task_id()

    response = api.run_async({"prompt": wf.failing("webhook sees this"), "webhook_url": receiver.url},
                             task_id)

    assert response.status_code == 500
    assert len(receiver.requests) == 3
    assert json.loads(receiver.requests[0][1])["error_code"] == "EXECUTION_FAILED"
    document = api.status(task_id).json()
    assert document["status"] == "failed"
    assert document["webhook"] == {"url": receiver.url, "delivered": False, "attempts": 3,
                                   "error": "HTTP 500"}


def test_async_task_id_checked(api: ApiHarness) -> None:
    response = api.run_async(wf.image_save(), "bad/../id")

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_TASK_ID"
