"""The one error shape and the supervisor's command line."""

from __future__ import annotations

from pathlib import Path

from funart_runtime.comfy.process import ComfyDirs, build_command
from funart_runtime.errors import ExecutionError, FunartError, UnknownNodeError
from funart_runtime.settings import Settings


def test_error_body_shape() -> None:
    error = UnknownNodeError("Node 1 uses class_type 'X'", details={"node_id": "1"})

    assert error.to_body("req-1") == {
        "type": "error",
        "error_code": "UNKNOWN_NODE_CLASS",
        "error_message": "Node 1 uses class_type 'X'",
        "details": {"node_id": "1"},
        "request_id": "req-1",
    }
    assert error.status == 400


def test_code_and_status_override() -> None:
    error = FunartError("m", code="SOMETHING", status=418)

    assert (error.code, error.status) == ("SOMETHING", 418)
    assert FunartError("m").code == "INTERNAL_ERROR"
    assert ExecutionError("m").status == 500


def test_command_is_headless_and_loopback(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "FUNART_WORK_DIR": str(tmp_path), "FUNART_COMFYUI_PORT": "8200",
        "FUNART_COMFYUI_ARGS": "--preview-method auto",
    })
    dirs = ComfyDirs.for_api(settings)

    command = build_command(settings, dirs, gpu=False)

    assert command[:2] == ["/root/venv/bin/python", "main.py"]
    assert command[command.index("--listen") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8200"
    assert "--disable-auto-launch" in command
    assert command[command.index("--output-directory") + 1] == str(tmp_path / "comfyui" / "output")
    assert command[command.index("--database-url") + 1].startswith("sqlite:////")
    assert "--cpu" in command
    assert command[-2:] == ["--preview-method", "auto"]


def test_command_on_gpu_has_no_cpu_flag(tmp_path: Path) -> None:
    settings = Settings.from_env({"FUNART_WORK_DIR": str(tmp_path)})

    assert "--cpu" not in build_command(settings, ComfyDirs.for_api(settings), gpu=True)


def test_extra_model_paths_point_at_nas(tmp_path: Path) -> None:
    settings = Settings.from_env({"FUNART_WORK_DIR": str(tmp_path / "w"),
                                  "FUNART_NAS_ROOT": str(tmp_path / "nas")})
    dirs = ComfyDirs.for_api(settings)

    dirs.create()

    text = dirs.extra_model_paths.read_text()
    assert f"base_path: {tmp_path / 'nas' / 'models'}" in text
    assert "  checkpoints: checkpoints" in text
    assert "  loras: loras" in text
    assert dirs.temp == tmp_path / "w" / "comfyui" / "temp"
