"""Record real ComfyUI history documents for the unit tests of output collection.

Starts ComfyUI from the cached environment (with the test-only nodes), runs a few
model-free workflows through the project's job client and writes each history
entry to tests/fixtures/history/<name>.json, with local paths replaced.

Usage: .venv/bin/python scripts/record_history_fixtures.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funart_runtime import devstack  # noqa: E402
from funart_runtime.comfy.client import ComfyClient  # noqa: E402
from funart_runtime.comfy.process import ComfyDirs, ComfyProcess  # noqa: E402
from funart_runtime.errors import FunartError  # noqa: E402
from funart_runtime.settings import Settings  # noqa: E402
from tests.support import media  # noqa: E402
from tests.support import workflows as wf  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "history"


def cases() -> dict[str, dict]:
    return {
        "two_saves": wf.example("image-invert-blur.json"),
        "preview_and_save_batch": {
            "1": wf.empty_image(32, 32, batch=2),
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
            "3": wf.save_image("1", "rec/saved"),
        },
        "audio": {
            "1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
            "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "rec/a"}},
        },
        "animated_webp": {
            "1": wf.empty_image(32, 32, batch=3),
            "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
                "images": ["1", 0], "filename_prefix": "rec/anim", "fps": 6.0,
                "lossless": False, "quality": 50, "method": "fastest"}},
        },
        "text": {
            "1": wf.empty_image(33, 17),
            "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        },
        "latent": {
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "rec/l"}},
        },
        "execution_error": wf.failing("exploded on purpose"),
    }


def main() -> None:
    env = devstack.ComfyEnv.locate()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        tree = env.copy_tree(base / "ComfyUI", [ROOT / "tests/comfyui_nodes/funart_test_nodes"])
        settings = Settings.from_env({
            "FUNART_PYTHON": str(env.python), "FUNART_COMFYUI_DIR": str(tree),
            "FUNART_WORK_DIR": str(base / "work"), "FUNART_NAS_ROOT": str(base / "nas"),
            "FUNART_COMFYUI_PORT": str(devstack.free_port()),
            "FUNART_COMFYUI_ARGS": "--cpu --comfy-api-base http://127.0.0.1:9",
        })
        dirs = ComfyDirs.for_api(settings)
        dirs.create()
        (dirs.input / "tone.wav").write_bytes(media.wav_tone())
        process = ComfyProcess(settings, dirs, auto_restart=False)
        process.start()
        try:
            record_all(settings, process, base)
        finally:
            process.stop()


def record_all(settings: Settings, process: ComfyProcess, base: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    client = ComfyClient(settings.comfyui_url)
    for name, workflow in cases().items():
        job = client.run(workflow, deadline_s=60)
        write(name, job.history, base)

    # An interrupted job: interrupt the slow node by its prompt id once it runs.
    slow = wf.slow(steps=20, delay=0.2)
    threading.Timer(1.5, lambda: interrupt_running(client)).start()
    try:
        job = client.run(slow, deadline_s=60)
    except FunartError as exc:
        raise SystemExit(f"interrupted job did not end cleanly: {exc.message}") from exc
    write("interrupted", job.history, base)


def interrupt_running(client: ComfyClient) -> None:
    queue = client.session.get(f"{client.base_url}/queue", timeout=10).json()
    for item in queue.get("queue_running", []):
        client.interrupt(item[1])


def write(name: str, entry: dict, base: Path) -> None:
    text = json.dumps(entry, indent=1, sort_keys=True).replace(str(base), "<scratch>")
    (OUT / f"{name}.json").write_text(text + "\n")
    print(f"recorded {name}: status={entry.get('status', {}).get('status_str')}")


if __name__ == "__main__":
    main()
