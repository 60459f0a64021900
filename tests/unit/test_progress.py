"""Progress tracking from ComfyUI events, and throttled status documents."""

from __future__ import annotations

from typing import Any

import pytest

from funart_runtime.errors import BadRequestError, ExecutionError, JobCancelledError, StorageError
from funart_runtime.progress import ProgressTracker
from funart_runtime.tasks import TaskRecorder, check_task_id


def message(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": {"prompt_id": "p1", **data}}


def finished(*nodes: str) -> dict[str, Any]:
    return message("progress_state", nodes={n: {"state": "finished"} for n in nodes})


def test_sequence_of_a_slow_node() -> None:
    tracker = ProgressTracker("p1", nodes_in_workflow=3)

    events = []
    for item in [
        message("execution_start"),
        message("execution_cached", nodes=["1"]),
        message("executing", node="2"),
        message("progress", node="2", value=1, max=2),
        message("progress", node="2", value=2, max=2),
        finished("2"),
        finished("2", "3"),
    ]:
        events += tracker.update(item)

    assert [e["event"] for e in events] == [
        "started", "node_start", "progress", "progress", "node_done", "node_done"
    ]
    assert events[3] == {"event": "progress", "node": "2", "value": 2, "max": 2,
                         "nodes_done": 0, "nodes_total": 2}
    assert tracker.summary()["nodes_done"] == 2


def test_other_prompt_ignored() -> None:
    tracker = ProgressTracker("p1", nodes_in_workflow=2)

    events = tracker.update({"type": "progress", "data": {"prompt_id": "p2", "value": 1, "max": 2}})

    assert events == []
    assert tracker.summary()["value"] == 0


def test_status_messages_ignored() -> None:
    tracker = ProgressTracker("p1", nodes_in_workflow=2)

    assert tracker.update({"type": "status", "data": {"status": {}}}) == []


class MemoryTasks:
    """Records status writes; fails on demand."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []
        self.fail = False

    def write(self, document: dict[str, Any]) -> None:
        if self.fail:
            raise StorageError("down")
        self.writes.append(dict(document))


def test_recorder_writes_each_state_once() -> None:
    tasks = MemoryTasks()
    recorder = TaskRecorder(tasks, "t1", interval_s=60)  # type: ignore[arg-type]

    recorder.set_status("queued")
    recorder.set_status("queued")
    recorder.set_status("running")
    recorder.succeed({"ok": True})

    assert [w["status"] for w in tasks.writes] == ["queued", "running", "succeeded"]
    assert tasks.writes[-1]["result"] == {"ok": True}


def test_recorder_throttles_progress() -> None:
    tasks = MemoryTasks()
    recorder = TaskRecorder(tasks, "t1", interval_s=60)  # type: ignore[arg-type]
    recorder.set_status("running")

    for value in range(10):
        recorder.set_progress({"value": value})

    assert len(tasks.writes) == 1
    assert recorder.document["progress"] == {"value": 9}


def test_recorder_progress_unthrottled_at_zero_interval() -> None:
    tasks = MemoryTasks()
    recorder = TaskRecorder(tasks, "t1", interval_s=0)  # type: ignore[arg-type]

    recorder.set_progress({"value": 1})
    recorder.set_progress({"value": 2})

    assert [w["progress"] for w in tasks.writes] == [{"value": 1}, {"value": 2}]


def test_recorder_failure_states() -> None:
    tasks = MemoryTasks()
    recorder = TaskRecorder(tasks, "t1")  # type: ignore[arg-type]

    recorder.fail(JobCancelledError("stop"), "r1")
    assert tasks.writes[-1]["status"] == "cancelled"
    recorder.fail(ExecutionError("boom"), "r1")
    assert tasks.writes[-1]["status"] == "failed"
    assert tasks.writes[-1]["error"]["error_code"] == "EXECUTION_FAILED"


def test_recorder_survives_storage_failure() -> None:
    tasks = MemoryTasks()
    tasks.fail = True
    recorder = TaskRecorder(tasks, "t1")  # type: ignore[arg-type]

    recorder.set_status("running")

    assert recorder.status == "running"


def test_recorder_without_store_keeps_document() -> None:
    recorder = TaskRecorder(None, "t1")

    recorder.set_status("running")

    assert recorder.document["status"] == "running"


@pytest.mark.parametrize("task_id", ["a", "task-1", "A.b_c-9", "x" * 128])
def test_valid_task_ids(task_id: str) -> None:
    assert check_task_id(task_id) == task_id


@pytest.mark.parametrize("task_id", ["", None, "../x", "a/b", "-lead", "x" * 129, "sp ace"])
def test_invalid_task_ids(task_id: str | None) -> None:
    with pytest.raises(BadRequestError):
        check_task_id(task_id)
