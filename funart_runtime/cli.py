"""The ``funart`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from . import __version__
from .caller import CallOptions, call, load_workflow
from .errors import ConfigError, FunartError
from .logs import setup_logging
from .settings import Settings
from .snapshots.cli import add_snapshot_commands
from .storage import Credentials
from .test_checkpoint import ensure_test_checkpoint

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command_handler"):
        parser.print_help()
        return 2
    try:
        return int(args.command_handler(args))
    except FunartError as exc:
        print(f"funart: {exc.message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funart", description="Run ComfyUI on Function Compute: workspace, api, control."
    )
    parser.add_argument("--version", action="version", version=f"funart-runtime {__version__}")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the FC custom-runtime server of a role")
    serve.add_argument("role", choices=["api", "workspace", "control"],
                       help="function role to serve")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument(
        "--port", type=int, default=None,
        help="port to bind (default $FC_CUSTOM_LISTEN_PORT, else 9000)",
    )
    serve.set_defaults(command_handler=_serve)

    call = commands.add_parser(
        "call", help="run a workflow on an api function and download its outputs"
    )
    call.add_argument("workflow", type=Path, help="API-format workflow file (JSON)")
    call.add_argument("--url", required=True, help="base URL of the api function")
    call.add_argument(
        "--async", dest="use_async", action="store_true",
        help="submit as an FC async task and poll its status",
    )
    call.add_argument(
        "--param", action="append", default=[], metavar="NODE.INPUT=VALUE",
        help="set an input before submitting; VALUE is JSON or a bare string (repeatable)",
    )
    call.add_argument("--out", type=Path, default=None, help="folder to download outputs into")
    call.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the result (3600)"
    )
    call.add_argument(
        "--sign", action="store_true",
        help="sign requests for an HTTP trigger with authType: function, using "
             "ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and "
             "ALIBABA_CLOUD_SECURITY_TOKEN",
    )
    call.set_defaults(command_handler=_call)

    add_snapshot_commands(commands)

    local = commands.add_parser("local", help="run the functions of s.yaml on this machine")
    local_commands = local.add_subparsers(title="local commands")
    up = local_commands.add_parser(
        "up", help="serve every function of s.yaml on loopback, as FC would (needs root)"
    )
    up.add_argument("--s-yaml", type=Path, default=Path("s.yaml"),
                    help="s.yaml to run (default s.yaml)")
    up.add_argument("--state", type=Path, default=Path(".funart-local"),
                    help="folder for NAS, instances and logs (default .funart-local)")
    up.add_argument("--idle", type=float, default=600.0,
                    help="seconds an idle instance lives before /pre-stop (default 600)")
    up.set_defaults(command_handler=_local_up)

    model = commands.add_parser("model", help="model files for tests and the demo")
    model_commands = model.add_subparsers(title="model commands")
    checkpoint = model_commands.add_parser(
        "make-test-checkpoint",
        help="build an SD 1.5-layout checkpoint with random weights (2.1 GB, about 25 s)",
    )
    checkpoint.add_argument("--out", type=Path, required=True, help="file to write (.safetensors)")
    checkpoint.add_argument(
        "--python", type=Path, default=None,
        help="ComfyUI's interpreter (default $FUNART_PYTHON)",
    )
    checkpoint.add_argument(
        "--comfyui-dir", type=Path, default=None,
        help="ComfyUI tree (default $FUNART_COMFYUI_DIR)",
    )
    checkpoint.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    checkpoint.add_argument("--force", action="store_true", help="rebuild even if cached")
    checkpoint.set_defaults(command_handler=_make_test_checkpoint)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    port = args.port or settings.listen_port

    app = _role_app(args.role, settings)
    logger.info("funart %s serving role %s on %s:%s", __version__, args.role, args.host, port)
    web.run_app(app, host=args.host, port=port, print=None, access_log=None)
    return 0


def _role_app(role: str, settings: Settings) -> web.Application:
    # Imported here: each role loads only its own handler module and dependencies.
    if role == "workspace":
        from handlers import workspace

        return workspace.create_app(settings)
    if role == "control":
        from handlers import control

        return control.create_app(settings)
    from handlers import api

    return api.create_app(settings)


def _call(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.workflow, args.param)
    credentials = None
    if args.sign:
        credentials = Credentials.resolve({}, Settings.from_env())
        if credentials is None:
            raise ConfigError(
                "--sign needs ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET."
            )
    options = CallOptions(url=args.url, use_async=args.use_async, params=args.param,
                          out=args.out, timeout_s=args.timeout, credentials=credentials)
    try:
        result = call(workflow, options)
    except FunartError as exc:
        print(json.dumps({"error_code": exc.code, "error_message": exc.message,
                          "details": exc.details}, indent=2))
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _local_up(args: argparse.Namespace) -> int:
    setup_logging(Settings.from_env().log_level)
    from .local.runner import run

    return run(args.s_yaml, args.state, args.idle)


def _make_test_checkpoint(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    info = ensure_test_checkpoint(
        args.out.resolve(),
        python=args.python or settings.python,
        comfyui_dir=args.comfyui_dir or settings.comfyui_dir,
        seed=args.seed,
        force=args.force,
    )
    state = "built" if info.built else "cached"
    print(json.dumps({"path": str(info.path), "sha256": info.sha256, "bytes": info.bytes,
                      "state": state}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
