"""`make demo`'s path as a test: scripts/demo.py runs the whole lifecycle as root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lifecycle demo needs root"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_lifecycle_demo_runs(tmp_path: Path) -> None:
    # The demo's own folder is the test's, so a user's .demo/ stays as it was.
    env = {**os.environ, "FUNART_DEMO_DIR": str(tmp_path / "demo")}

    result = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=env)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert len(steps) == 12, steps
    assert "roll back to the first one" in steps[-3]
    outputs = list((tmp_path / "demo" / "outputs").rglob("*.png"))
    assert any(path.name.startswith("lighthouse_") for path in outputs)
    assert any(path.name.startswith("tint_") for path in outputs)
