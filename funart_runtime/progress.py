"""Pure tracking of one job's progress from ComfyUI websocket events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProgressTracker:
    """Fold ComfyUI events of one prompt into a progress summary and stream events.

    ``nodes_total`` is the number of workflow nodes minus those ComfyUI reports as
    cached. NOTE: nodes that ComfyUI prunes (unused outputs) are counted, so a job can
    end with ``nodes_done`` below ``nodes_total``.
    """

    prompt_id: str
    nodes_in_workflow: int
    started: bool = False
    node: str | None = None
    value: float = 0
    maximum: float = 0
    nodes_total: int = 0
    finished_nodes: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nodes_total = self.nodes_in_workflow

    def update(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply one websocket message; return the stream events it produces."""
        kind = message.get("type")
        data = message.get("data") or {}
        if data.get("prompt_id") not in (None, self.prompt_id):
            return []

        if kind == "execution_start":
            self.started = True
            return [{"event": "started"}]
        if kind == "execution_cached":
            self.nodes_total = max(0, self.nodes_in_workflow - len(data.get("nodes") or []))
            return []
        if kind == "executing" and data.get("node") is not None:
            self.node, self.value, self.maximum = str(data["node"]), 0, 0
            return [{"event": "node_start", "node": self.node, **self.summary()}]
        if kind == "progress":
            self.node = str(data.get("node"))
            self.value, self.maximum = data.get("value", 0), data.get("max", 0)
            return [{"event": "progress", "node": self.node, **self.summary()}]
        if kind == "progress_state":
            return self._finished_nodes(data.get("nodes") or {})
        return []

    def summary(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "value": self.value,
            "max": self.maximum,
            "nodes_done": len(self.finished_nodes),
            "nodes_total": self.nodes_total,
        }

    def _finished_nodes(self, nodes: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        for node_id, state in nodes.items():
            if state.get("state") == "finished" and node_id not in self.finished_nodes:
                self.finished_nodes.add(node_id)
                events.append({"event": "node_done", "node": node_id, **self.summary()})
        return events
