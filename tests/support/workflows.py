"""API-format workflows used by the integration tests, built as dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / name).read_text()))


def empty_image(width: int = 64, height: int = 48, batch: int = 1, color: int = 0) -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": width, "height": height, "batch_size": batch, "color": color},
    }


def save_image(source: str, prefix: str = "test/img") -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def image_save(width: int = 64, height: int = 48, prefix: str = "test/img") -> dict[str, Any]:
    return {"1": empty_image(width, height), "2": save_image("1", prefix)}


def slow(steps: int, delay: float, prefix: str = "test/slow") -> dict[str, Any]:
    return {
        "1": empty_image(),
        "2": {
            "class_type": "FunartTestSlowProgress",
            "inputs": {"image": ["1", 0], "steps": steps, "delay": delay},
        },
        "3": save_image("2", prefix),
    }


def failing(message: str = "exploded on purpose") -> dict[str, Any]:
    return {
        "1": empty_image(),
        "2": {"class_type": "FunartTestFail", "inputs": {"image": ["1", 0], "message": message}},
        "3": save_image("2"),
    }
