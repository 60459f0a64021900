"""A real SD 1.5-layout checkpoint with random weights, built once into a cache.

No weights can be downloaded in tests or the demo, so the project builds its own
with ComfyUI's model classes (``tools/make_test_checkpoint.py``, run with
ComfyUI's interpreter). It is deterministic: the same seed, torch and ComfyUI
give the same bytes, so its sha256 can serve as a download checksum.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import FunartError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "funart-test-sd15.safetensors"
# Measured with seed 0, torch 2.14.1 and ComfyUI 0.3.75 on x86_64 (2,132,625,222 bytes).
EXPECTED_SHA256 = "68cdaf5d8003572526ccdf84b0338d80e3cbcd131b30776434733fe93def53b5"
_TOOL = Path(__file__).resolve().parent / "tools" / "make_test_checkpoint.py"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    sha256: str
    bytes: int
    built: bool


def ensure_test_checkpoint(
    out: Path, *, python: Path, comfyui_dir: Path, seed: int = 0, force: bool = False
) -> CheckpointInfo:
    """Build the checkpoint at ``out`` unless a verified build of it is already there."""
    sidecar = out.with_name(out.name + ".json")
    cached = _read_sidecar(out, sidecar)
    if cached is not None and not force:
        return cached

    command = [str(python), str(_TOOL), "--comfyui-dir", str(comfyui_dir), "--out", str(out),
               "--seed", str(seed)]
    logger.info("Building the test checkpoint at %s (about 25 s, 2.1 GB)", out)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FunartError(
            f"Building the test checkpoint failed with exit status {result.returncode}: "
            f"{result.stderr.strip()[-2000:]}",
            code="CHECKPOINT_BUILD_FAILED",
        )

    document = json.loads(result.stdout.strip().splitlines()[-1])
    sidecar.write_text(json.dumps({"sha256": document["sha256"], "bytes": document["bytes"],
                                   "seed": seed}))
    return CheckpointInfo(out, document["sha256"], int(document["bytes"]), built=True)


def _read_sidecar(out: Path, sidecar: Path) -> CheckpointInfo | None:
    # The sidecar is written only after the tool verified the file by loading it.
    if not out.is_file() or not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except ValueError:
        return None
    if recorded.get("bytes") != out.stat().st_size:
        return None
    return CheckpointInfo(out, str(recorded["sha256"]), int(recorded["bytes"]), built=False)
