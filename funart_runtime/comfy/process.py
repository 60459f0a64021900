"""ComfyUI as a supervised child process on 127.0.0.1.

Ready means the process is alive and ``GET /system_stats`` responds. When the
process dies unexpectedly, waiting jobs learn it at once through ``check_alive``
(each start has a generation number, so a job started on a dead process fails
even after the restart) and the supervisor starts ComfyUI again.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..errors import ComfyUIExitedError, ComfyUIStartError, NotReadyError
from ..logs import log_call
from ..settings import Settings

logger = logging.getLogger(__name__)
comfy_output_logger = logging.getLogger("funart.comfyui.output")

# Model folder names of ComfyUI 0.3.75 (folder_paths.py), wired to the NAS models folder.
MODEL_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "gligen", "upscale_models", "latent_upscale_models", "hypernetworks", "photomaker",
    "classifiers", "model_patches", "audio_encoders",
)
LOG_TAIL_LINES = 40
_POLL_INTERVAL_S = 0.25
_STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ComfyDirs:
    """The folders and files of one ComfyUI instance."""

    input: Path
    output: Path
    temp_arg: Path
    user: Path
    models: Path
    log_file: Path
    extra_model_paths: Path

    @property
    def temp(self) -> Path:
        # ComfyUI 0.3.75 writes temp files into <--temp-directory>/temp.
        return self.temp_arg / "temp"

    @classmethod
    def for_api(cls, settings: Settings) -> ComfyDirs:
        """Lay out local-disk folders for an api instance, with models read from NAS."""
        base = settings.work_dir / "comfyui"
        return cls(
            input=base / "input",
            output=base / "output",
            temp_arg=base,
            user=base / "user",
            models=settings.nas_root / "models",
            log_file=base / "comfyui.log",
            extra_model_paths=base / "extra_model_paths.yaml",
        )

    @classmethod
    def for_workspace(cls, settings: Settings) -> ComfyDirs:
        """Lay out the workspace: input, output, user data and models on NAS."""
        local = settings.work_dir / "comfyui"
        nas = settings.nas_root
        return cls(
            input=nas / "input",
            output=nas / "output",
            temp_arg=local,
            user=nas / "user",
            models=nas / "models",
            log_file=local / "comfyui.log",
            extra_model_paths=local / "extra_model_paths.yaml",
        )

    def create(self) -> None:
        for path in (self.input, self.output, self.temp_arg, self.user, self.log_file.parent,
                     self.extra_model_paths.parent):
            path.mkdir(parents=True, exist_ok=True)
        lines = ["funart_nas:", f"  base_path: {self.models}", "  is_default: true"]
        lines += [f"  {folder}: {folder}" for folder in MODEL_FOLDERS]
        self.extra_model_paths.write_text("\n".join(lines) + "\n")


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


def build_command(settings: Settings, dirs: ComfyDirs, *, gpu: bool) -> list[str]:
    """Build the ComfyUI command line: headless, loopback only, folders from ``dirs``."""
    command = [
        str(settings.python), "main.py",
        "--listen", "127.0.0.1",
        "--port", str(settings.comfyui_port),
        "--disable-auto-launch",
        "--input-directory", str(dirs.input),
        "--output-directory", str(dirs.output),
        "--temp-directory", str(dirs.temp_arg),
        "--user-directory", str(dirs.user),
        "--database-url", f"sqlite:///{dirs.user / 'comfyui.db'}",
        "--extra-model-paths-config", str(dirs.extra_model_paths),
    ]
    if not gpu and "--cpu" not in settings.comfyui_args:
        command.append("--cpu")
    command.extend(settings.comfyui_args)
    return command


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM when the runtime dies, so no orphan
    # ComfyUI keeps the port after a crash of the server process.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


# The kernel sends the death signal when the *thread* that forked the child exits,
# so every child is started from this one long-lived thread.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funart-spawn")


def spawn_child(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` so that it gets SIGTERM when this process dies."""

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, preexec_fn=_die_with_parent, **kwargs)

    return _SPAWNER.submit(start).result()


class ComfyProcess:
    """Start, watch, restart and stop one ComfyUI process."""

    def __init__(self, settings: Settings, dirs: ComfyDirs, *, auto_restart: bool = True) -> None:
        self.settings = settings
        self.dirs = dirs
        self.auto_restart = auto_restart
        self.generation = 0
        self.state = "stopped"
        self.exit_code: int | None = None
        # Enough for a whole start-up log, whose import report names failed custom nodes.
        self._tail: collections.deque[str] = collections.deque(maxlen=2000)
        self._last_exit_tail = ""
        # Exit code and log tail of earlier generations, for jobs that ran on them.
        self._exits: dict[int, tuple[int | None, str]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._stopping = False

    # ---- public API -------------------------------------------------------

    def start(self) -> None:
        """Start ComfyUI and return when it responds; raise ComfyUIStartError if it cannot."""
        with self._lock:
            # A process that is already up or starting is waited for, never started twice.
            if not (self._alive() and self.state in {"ready", "starting"}):
                self._spawn()
            generation = self.generation
        self._wait_ready(generation)

    def ensure_ready(self) -> int:
        """Wait until ComfyUI is ready, starting it if needed; return its generation."""
        if self.state == "stopping":
            raise NotReadyError("ComfyUI is stopping because the instance is shutting down.")
        self.start()
        return self.generation

    def check_alive(self, generation: int) -> None:
        """Raise ComfyUIExitedError if the process of ``generation`` is gone."""
        with self._lock:
            if generation == self.generation:
                if self._alive():
                    return
                # The watcher may not have recorded the exit yet; the process has.
                code = self._proc.returncode if self._proc else None
                tail = self.log_tail()
            else:
                code, tail = self._exits.get(generation, (None, ""))
        raise ComfyUIExitedError(
            f"ComfyUI exited while the job was running (exit code {code}). "
            "It is being restarted; submit the job again.",
            details={"exit_code": code, "log_tail": tail},
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Stop ComfyUI with SIGTERM, then SIGKILL after ``timeout_s``."""
        with self._lock:
            proc = self._proc
            self._stopping = True
            self.state = "stopping"
        if proc is not None and proc.poll() is None:
            with log_call(logger, "comfyui.stop", pid=proc.pid):
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("ComfyUI did not stop in %.0f s; killing it", timeout_s)
                    proc.kill()
                    proc.wait()
        with self._lock:
            self.state = "stopped"
            self._ready.clear()

    @property
    def current_state(self) -> str:
        """Return the state, seeing a dead process before the watcher records it."""
        with self._lock:
            if self.state in {"ready", "starting"} and not self._alive():
                return "exited"
            return self.state

    def log_lines(self) -> list[str]:
        """Return the output lines of the current process kept in memory."""
        return list(self._tail)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(list(self._tail)[-lines:])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ---- internals ----------------------------------------------------------

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        self._check_installation()
        self._check_port_free()
        self.dirs.create()

        command = build_command(self.settings, self.dirs, gpu=has_nvidia_gpu())
        env = dict(os.environ, PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
        self._tail.clear()
        self._ready.clear()
        self._stopping = False
        try:
            proc = spawn_child(
                command,
                cwd=self.settings.comfyui_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.state = "failed"
            raise ComfyUIStartError(
                f"Could not run FUNART_PYTHON {self.settings.python}: {exc.strerror}. "
                "Point FUNART_PYTHON at the interpreter of ComfyUI's environment.",
                details={"python": str(self.settings.python)},
            ) from None

        self._proc = proc
        self.generation += 1
        self.state = "starting"
        self.exit_code = None
        logger.info("ComfyUI starting: pid=%s generation=%s", proc.pid, self.generation)
        threading.Thread(target=self._pump_output, args=(proc,), daemon=True).start()
        threading.Thread(target=self._watch, args=(proc, self.generation), daemon=True).start()

    def _check_installation(self) -> None:
        main_py = self.settings.comfyui_dir / "main.py"
        if not main_py.is_file():
            self.state = "failed"
            raise ComfyUIStartError(
                f"FUNART_COMFYUI_DIR {self.settings.comfyui_dir} has no main.py. "
                "Point it at a ComfyUI tree.",
                details={"comfyui_dir": str(self.settings.comfyui_dir)},
            )

    def _check_port_free(self) -> None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.settings.comfyui_port)) == 0:
                self.state = "failed"
                raise ComfyUIStartError(
                    f"Port {self.settings.comfyui_port} on 127.0.0.1 is already in use. "
                    "Stop the other server or set FUNART_COMFYUI_PORT to a free port.",
                    details={"port": self.settings.comfyui_port},
                )

    def _pump_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(self.dirs.log_file, "ab") as log_file:
            for raw in proc.stdout:
                log_file.write(raw)
                log_file.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                self._tail.append(line)
                comfy_output_logger.debug("%s", line)

    def _wait_ready(self, generation: int) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        url = f"{self.settings.comfyui_url}/system_stats"
        started = time.monotonic()
        while time.monotonic() < deadline:
            if self._ready.is_set() and generation == self.generation:
                return
            self._raise_if_exited_during_start(generation)
            try:
                response = requests.get(url, timeout=2)
            except requests.RequestException:
                time.sleep(_POLL_INTERVAL_S)
                continue
            if response.status_code == 200:
                self._mark_ready(generation, time.monotonic() - started)
                return
            time.sleep(_POLL_INTERVAL_S)

        tail = self.log_tail()
        self.stop()
        self.state = "failed"
        raise ComfyUIStartError(
            f"ComfyUI did not respond within FUNART_READY_TIMEOUT_S="
            f"{self.settings.ready_timeout_s:g} s. Raise the timeout or read the log tail.",
            details={"log_tail": tail},
        )

    def _raise_if_exited_during_start(self, generation: int) -> None:
        with self._lock:
            dead = generation != self.generation or not self._alive()
        if not dead:
            return
        time.sleep(0.2)  # let the output pump read the last lines
        code = self._proc.returncode if self._proc else None
        raise ComfyUIStartError(
            f"ComfyUI exited during start with exit code {code}. Read the log tail for the cause.",
            details={"exit_code": code, "log_tail": self.log_tail()},
        )

    def _mark_ready(self, generation: int, seconds: float) -> None:
        with self._lock:
            if generation != self.generation:
                return
            self.state = "ready"
            self._ready.set()
        logger.info("ComfyUI ready: generation=%s after %.1f s", generation, seconds)

    def _watch(self, proc: subprocess.Popen[bytes], generation: int) -> None:
        code = proc.wait()
        time.sleep(0.2)  # let the output pump read the last lines
        with self._lock:
            if generation != self.generation:
                return
            self.exit_code = code
            self._last_exit_tail = self.log_tail()
            self._exits = {generation: (code, self._last_exit_tail)}
            self._ready.clear()
            if self._stopping:
                return
            was_ready = self.state == "ready"
            self.state = "exited"
        logger.error("ComfyUI exited unexpectedly: exit_code=%s\n%s", code, self._last_exit_tail)
        if was_ready and self.auto_restart:
            self._restart()

    def _restart(self) -> None:
        try:
            self.start()
        except ComfyUIStartError as exc:
            logger.error("ComfyUI restart failed: %s", exc.message)
