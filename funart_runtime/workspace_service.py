"""The workspace function's work: ComfyUI from the latest snapshot, nodes, models, saves.

Models, input, output and user data live on NAS and need no snapshot. The ComfyUI
tree and its virtualenv are saved as dev snapshots (``dev-<UTC time>``) on request
and when FC stops the instance, and restored at ``/initialize``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from . import models, nodes
from .comfy.process import ComfyDirs, ComfyProcess
from .errors import BadRequestError, FunartError
from .settings import Settings
from .snapshots.store import SnapshotStore

logger = logging.getLogger(__name__)

DEV_PREFIX = "dev-"


def dev_snapshot_name() -> str:
    return DEV_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class WorkspaceService:
    """Lifecycle, snapshots, custom nodes and models of the workspace instance."""

    def __init__(self, settings: Settings, process: ComfyProcess | None = None) -> None:
        self.settings = settings
        self.dirs = ComfyDirs.for_workspace(settings)
        self.process = process or ComfyProcess(settings, self.dirs)
        self.store = SnapshotStore.from_settings(settings)
        self.restored: str | None = None
        # Installs, saves and restarts change the environment: one at a time.
        self._changes = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------

    def initialize(self) -> dict[str, Any]:
        """Restore FUNART_SNAPSHOT (default: the latest dev snapshot), then start ComfyUI."""
        with self._changes:
            name = self.settings.snapshot or self.store.latest(DEV_PREFIX)
            if name:
                report = self.store.restore(name)
                self.restored = name
                logger.info("Restored snapshot %s: %s", name, report.as_dict())
            else:
                logger.info("No snapshot yet: running the base environment as it is")
            self.process.start()
        return {"comfyui": "ready", "snapshot": self.restored}

    def pre_stop(self) -> dict[str, Any]:
        """Stop ComfyUI and save a dev snapshot before the hook's deadline."""
        self.process.stop()
        try:
            saved = self.save_snapshot(timeout_s=self.settings.snapshot_timeout_s)
        except FunartError as exc:
            # The previous snapshot stays the latest; the next start restores it.
            logger.error("Pre-stop snapshot failed, keeping the previous one: %s", exc.message)
            return {"comfyui": "stopped", "snapshot": None, "error": exc.to_body(None)}
        return {"comfyui": "stopped", "snapshot": saved["name"]}

    def health(self) -> dict[str, Any]:
        state = self.process.current_state
        return {"ready": state == "ready", "comfyui": state, "comfyui_pid": self.process.pid}

    def status(self) -> dict[str, Any]:
        return {
            **self.health(),
            "restored_snapshot": self.restored,
            "latest_snapshot": self.store.latest(DEV_PREFIX),
            "base_manifest": self.settings.base_manifest or None,
            "custom_nodes": sorted(
                path.name for path in self._custom_nodes_dir().glob("*") if path.is_dir()
                and path.name != "__pycache__"
            ),
        }

    def restart(self) -> dict[str, Any]:
        with self._changes:
            self.process.stop()
            self.process.start()
        return self.health()

    # ---- snapshots ----------------------------------------------------------------

    def save_snapshot(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Save the ComfyUI tree and its virtualenv as a new dev snapshot."""
        with self._changes:
            name = dev_snapshot_name()
            deadline = time.monotonic() + timeout_s if timeout_s else None
            paths = [self.settings.comfyui_dir, self.settings.python_env_dir]
            self.store.save(name, paths, base=self.settings.base_manifest or None,
                            python=self.settings.python, deadline=deadline)
            report = self.store.last_save.as_dict() if self.store.last_save else {}
        return {"name": name, "report": report}

    def list_snapshots(self) -> list[dict[str, Any]]:
        return [info.as_dict() for info in self.store.list()]

    # ---- custom nodes ---------------------------------------------------------------

    def install_git_node(self, url: str, ref: str | None, name: str | None) -> dict[str, Any]:
        nodes.check_git_request(url, ref)
        target = self._custom_nodes_dir() / nodes.node_name(url, name)
        with self._changes:
            commit = nodes.clone_node(url, ref, target, mirror=self.settings.github_mirror,
                                      timeout_s=self.settings.install_timeout_s)
            return self._finish_node(target, {"source": url, "commit": commit})

    def install_archive_node(self, data: bytes, name: str) -> dict[str, Any]:
        target = self._custom_nodes_dir() / nodes.node_name("", name)
        with self._changes:
            nodes.unpack_archive(data, target)
            return self._finish_node(target, {"source": "archive", "commit": None})

    def _finish_node(self, target: Path, facts: dict[str, Any]) -> dict[str, Any]:
        pip_output = nodes.install_requirements(
            target, self.settings.python, index_url=self.settings.pip_index_url,
            timeout_s=self.settings.install_timeout_s,
        )
        self.process.stop()
        self.process.start()

        classes = self._node_classes(target.name)
        failures = nodes.import_failures(self.process.log_lines(), target.name)
        result = {"name": target.name, "path": str(target), **facts, "classes": classes,
                  "requirements_installed": pip_output is not None}
        if failures or not classes:
            raise FunartError(
                f"Custom node {target.name} was installed but did not load in ComfyUI. It is "
                "left in place; fix it or remove it, then restart.",
                code="NODE_IMPORT_FAILED", status=422,
                details={**result, "log": failures or self.process.log_tail()},
            )
        return result

    def _node_classes(self, name: str) -> list[str]:
        response = requests.get(f"{self.settings.comfyui_url}/object_info", timeout=60)
        module = f"custom_nodes.{name}"
        return sorted(
            class_type for class_type, info in response.json().items()
            if info.get("python_module") == module
        )

    def _custom_nodes_dir(self) -> Path:
        return self.settings.comfyui_dir / "custom_nodes"

    # ---- models ---------------------------------------------------------------------

    def download_model(self, request: dict[str, Any]) -> dict[str, Any]:
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise BadRequestError("Missing url: send {\"url\": ..., \"folder\": ...}.",
                                  code="INVALID_PARAMETER")
        folder = str(request.get("folder") or "")
        filename = str(request.get("filename") or models.filename_from_url(url))
        target = models.model_target(self.dirs.models, folder, filename)
        return models.download_model(
            url, target, sha256=models.check_sha256(request.get("sha256")),
            cache_root=self.settings.nas_root / "funart" / "model-cache",
            allow_private=self.settings.allow_private_urls,
            timeout_s=self.settings.input_timeout_s,
        )

    def upload_model(
        self, folder: str, filename: str, sha256: str | None, chunks: Iterable[bytes]
    ) -> dict[str, Any]:
        target = models.model_target(self.dirs.models, folder, filename)
        digest = models.save_upload(chunks, target, models.check_sha256(sha256))
        return {"folder": folder, "filename": filename, "path": str(target.path),
                "bytes": target.path.stat().st_size, "sha256": digest, "source": "upload"}
