"""Local stand-ins for the demo, the tests and the benchmarks, all on 127.0.0.1.

- the ComfyUI base environment installed by ``scripts/install-comfyui.sh``;
- a moto S3 server standing in for OSS, with a bucket created through oss2;
- ``funart serve api`` as a child process with FC-like environment variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import oss2
import requests

TEST_ACCESS_KEY = "test"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "funart-runtime"


@dataclass(frozen=True)
class ComfyEnv:
    """An installed ComfyUI base environment: its interpreter and its tree."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def tree(self) -> Path:
        return self.root / "ComfyUI"

    @classmethod
    def locate(cls) -> ComfyEnv:
        """Find the environment: ``$FUNART_COMFYUI_ENV``, else the default cache."""
        cache = Path(os.environ.get("FUNART_CACHE_DIR", DEFAULT_CACHE_DIR))
        root = Path(os.environ.get("FUNART_COMFYUI_ENV", cache / "comfyui-0.3.75"))
        env = cls(root)
        if not env.python.exists() or not (env.tree / "main.py").exists():
            raise RuntimeError(
                f"No ComfyUI environment at {root}. Run scripts/install-comfyui.sh "
                "(make test and make demo run it for you)."
            )
        return env

    def copy_tree(self, destination: Path, custom_nodes: Sequence[Path] = ()) -> Path:
        """Copy the ComfyUI tree to ``destination``, adding ``custom_nodes`` packages."""
        shutil.copytree(self.tree, destination, ignore=shutil.ignore_patterns("__pycache__"))
        for package in custom_nodes:
            shutil.copytree(package, destination / "custom_nodes" / package.name)
        return destination


def test_checkpoint_path() -> Path:
    """Return where ``make checkpoint`` builds the random-weights SD 1.5 checkpoint."""
    cache = Path(os.environ.get("FUNART_CACHE_DIR", DEFAULT_CACHE_DIR))
    return cache / "models" / "checkpoints" / "funart-test-sd15.safetensors"


def link_test_checkpoint(nas_root: Path) -> Path:
    """Put the test checkpoint into ``<nas_root>/models/checkpoints`` as a symlink."""
    source = test_checkpoint_path()
    if not source.is_file():
        raise RuntimeError(f"No test checkpoint at {source}. Run `make checkpoint`.")
    target = nas_root / "models" / "checkpoints" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Wait until ``url`` responds with any status, failing early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode} before {url} responded"
            )
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not respond within {timeout_s:g} s")


class MotoServer:
    """A moto S3 server on 127.0.0.1 that oss2 uses as OSS."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        moto = Path(sys.executable).parent / "moto_server"
        log_path = self.log_path or Path(os.devnull)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        wait_for_http(self.endpoint, self.proc, 30)
        return self

    def create_bucket(self, name: str) -> oss2.Bucket:
        bucket = oss2.Bucket(oss2.Auth(TEST_ACCESS_KEY, TEST_ACCESS_KEY), self.endpoint, name)
        # moto serves its index page a moment before its S3 routes are ready.
        for attempt in range(10):
            try:
                bucket.create_bucket()
                return bucket
            except (oss2.exceptions.OssError, oss2.exceptions.RequestError):
                if attempt == 9:
                    raise
                time.sleep(0.3)
        return bucket

    def stop(self) -> None:
        stop_process(self.proc)


class ApiServer:
    """``funart serve <role>`` (api by default) as a child process on 127.0.0.1."""

    role = "api"

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiServer:
        funart = Path(sys.executable).parent / "funart"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(funart), "serve", self.role, "--host", "127.0.0.1", "--port",
                 str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        wait_for_http(f"{self.url}/health", self.proc, 30)
        return self

    def initialize(self, timeout_s: float = 300) -> requests.Response:
        return requests.post(f"{self.url}/initialize", timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/pre-stop", timeout=60)
        stop_process(self.proc)


class WorkspaceServer(ApiServer):
    """``funart serve workspace`` as a child process on 127.0.0.1."""

    role = "workspace"


def make_overlay_venv(comfy_env: ComfyEnv, destination: Path) -> Path:
    """Create a small virtualenv that imports the cached ComfyUI environment's packages.

    Packages installed into it land in its own site-packages, so tests can install and
    snapshot custom node requirements without touching the shared cache.
    """
    subprocess.run([sys.executable, "-m", "venv", str(destination)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base_site = comfy_env.root / "venv" / "lib" / version / "site-packages"
    own_site = destination / "lib" / version / "site-packages"
    (own_site / "_funart_base_env.pth").write_text(f"{base_site}\n")
    return destination / "bin" / "python"


def api_environment(
    *,
    comfy_env: ComfyEnv,
    comfyui_dir: Path,
    work_dir: Path,
    nas_root: Path,
    oss_endpoint: str,
    bucket: str,
    comfyui_port: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Build the environment FC would give an api instance, pointed at local stand-ins."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("FUNART_", "ALIBABA_CLOUD_"))
    }
    env.update(
        FUNART_PYTHON=str(comfy_env.python),
        FUNART_COMFYUI_DIR=str(comfyui_dir),
        FUNART_WORK_DIR=str(work_dir),
        FUNART_NAS_ROOT=str(nas_root),
        FUNART_COMFYUI_PORT=str(comfyui_port or free_port()),
        # A closed loopback port as the Comfy API base keeps ComfyUI off the network.
        FUNART_COMFYUI_ARGS="--cpu --comfy-api-base http://127.0.0.1:9",
        FUNART_OSS_ENDPOINT=oss_endpoint,
        FUNART_OSS_BUCKET=bucket,
        FUNART_OSS_PREFIX="funart",
        ALIBABA_CLOUD_ACCESS_KEY_ID=TEST_ACCESS_KEY,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=TEST_ACCESS_KEY,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
