"""``funart local up``: the project's s.yaml run on one machine the way FC runs it.

Each function gets an HTTP trigger on a loopback port. Its first request starts an
instance (``funart serve <role>`` in a fresh copy of the base environment), calls
``/initialize`` with the hook's timeout, then forwards requests; an idle instance gets
``/pre-stop`` and is stopped. Async requests are answered 202 with a task id (409 for
a duplicate) and delivered in the background with FC's headers. A moto server stands
in for OSS, and a local FC 3.0 control API serves the control function, where
UpdateFunction replaces the function's instance, as a publish does on FC.

Every instance runs in a mount namespace of its own where its copy of the ComfyUI tree
and virtualenv is mounted at the same two paths, as a container image would place
them, so snapshots restore to identical absolute paths. This needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .. import devstack
from ..comfy.process import spawn_child
from ..errors import ConfigError, FunartError
from ..proxy import ComfyProxy
from . import syaml
from .fc_api import LocalFcApi

logger = logging.getLogger(__name__)

NAS_MOUNT = "/mnt/auto"
LOCAL_BUCKET = "funart-local"
_MOUNT_SCRIPT = 'mount --bind "$1" "$3" && mount --bind "$2" "$4" && shift 4 && exec "$@"'


@dataclass(frozen=True)
class Layout:
    """The folders of one ``funart local`` state directory."""

    root: Path

    @property
    def image(self) -> Path:
        return self.root / "image"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def nas(self) -> Path:
        return self.root / "nas"

    @property
    def base_manifest(self) -> Path:
        return self.root / "base-manifest.json"

    def function_dir(self, name: str) -> Path:
        return self.root / "functions" / name


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    proxy: ComfyProxy | None = None


def in_namespace(layout: Layout, tree: Path, venv: Path, command: list[str]) -> list[str]:
    """Wrap ``command`` so ``tree`` and ``venv`` are mounted at the image paths."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT_SCRIPT, "sh",
            str(tree), str(venv), str(layout.image / "comfyui"), str(layout.image / "venv"),
            *command]


def prepare_base(layout: Layout, comfy_env: devstack.ComfyEnv) -> None:
    """Build the base environment once: ComfyUI's tree, a virtualenv and its manifest."""
    if layout.base_manifest.is_file():
        return
    shutil.rmtree(layout.base, ignore_errors=True)
    for path in (layout.image / "comfyui", layout.image / "venv", layout.base / "venv"):
        path.mkdir(parents=True, exist_ok=True)
    comfy_env.copy_tree(layout.base / "comfyui")

    # The virtualenv is created at the image path, so its scripts name that path.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base_site = comfy_env.root / "venv" / "lib" / version / "site-packages"
    script = (f'{sys.executable} -m venv "$1" && '
              f'echo "{base_site}" > "$1/lib/{version}/site-packages/_funart_base_env.pth"')
    venv_path = str(layout.image / "venv")
    subprocess.run(in_namespace(layout, layout.base / "comfyui", layout.base / "venv",
                                ["sh", "-c", script, "sh", venv_path]), check=True)

    store_dir = layout.root / "base-store"
    funart = str(Path(sys.executable).parent / "funart")
    save = [funart, "snapshot", "save", "base", "--store", str(store_dir),
            "--path", str(layout.image / "comfyui"), "--path", venv_path]
    subprocess.run(in_namespace(layout, layout.base / "comfyui", layout.base / "venv", save),
                   check=True, capture_output=True)
    shutil.copyfile(store_dir / "manifests" / "base.json", layout.base_manifest)
    shutil.rmtree(store_dir)


class LocalRunner:
    """Triggers, instances, the FC control API and OSS for the functions of one s.yaml."""

    def __init__(self, s_yaml: Path, layout: Layout, *, idle_s: float = 600.0) -> None:
        self.document = syaml.load(s_yaml)
        self.layout = layout
        self.idle_s = idle_s
        self.comfy_env = devstack.ComfyEnv.locate()
        self.fc = LocalFcApi(on_update=self.recycle, instance_url=self.instance_url)
        self.resources = {name: resource["props"]
                          for name, resource in self.document["resources"].items()}
        self.roles = {props["functionName"]: name for name, props in self.resources.items()}
        self.instances: dict[str, Instance] = {}
        self.starting: dict[str, asyncio.Lock] = {}
        self.ports: dict[str, int] = {}
        self.moto: devstack.MotoServer | None = None
        self.runners: list[web.AppRunner] = []
        self.endpoints: dict[str, str] = {}
        self._reaper: asyncio.Future[None] | None = None

    # ---- start and stop ------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        self.layout.nas.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(prepare_base, self.layout, self.comfy_env)
        self.moto = await asyncio.to_thread(
            devstack.MotoServer(log_path=self.layout.root / "moto.log").start)
        await asyncio.to_thread(self.moto.create_bucket, self._bucket())

        for props in self.resources.values():
            self.fc.functions[props["functionName"]] = function_record(props)
            if (props.get("asyncInvokeConfig") or {}).get("asyncTask"):
                self.fc.async_configs[props["functionName"]] = props["asyncInvokeConfig"]

        fc_app = self.fc.app()
        fc_app.router.add_post("/_local/functions/{name}/stop", self._stop_route)
        fc_app.router.add_get("/_local/instances", self._instances_route)
        self.endpoints["fc_api"] = await self._serve(fc_app)
        for name, props in self.resources.items():
            self.endpoints[name] = await self._serve(self._trigger_app(props["functionName"]))
        self.endpoints["oss"] = self.moto.endpoint
        self.endpoints["bucket"] = self._bucket()
        self._reaper = asyncio.ensure_future(self._reap_idle())
        return self.endpoints

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for name in list(self.instances):
            await self.stop_instance(name)
        for runner in self.runners:
            await runner.cleanup()
        if self.moto is not None:
            self.moto.stop()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = devstack.free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{port}"

    # ---- instances -----------------------------------------------------------------

    async def instance_url(self, function: str) -> str:
        return (await self.ensure_instance(function)).url

    async def ensure_instance(self, function: str) -> Instance:
        """Return the function's running instance, cold-starting one if there is none."""
        lock = self.starting.setdefault(function, asyncio.Lock())
        async with lock:
            instance = self.instances.get(function)
            if instance is not None and instance.process.poll() is None:
                return instance
            instance = await asyncio.to_thread(self._spawn, function)
            self.instances[function] = instance
            await self._initialize(instance)
            return instance

    def _spawn(self, function: str) -> Instance:
        role = self.roles[function]
        home = self.layout.function_dir(function)
        # A new instance starts from the image, as on FC: a fresh copy of the base.
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        shutil.copytree(self.layout.base / "comfyui", home / "comfyui", symlinks=True)
        shutil.copytree(self.layout.base / "venv", home / "venv", symlinks=True)

        port = devstack.free_port()
        funart = str(Path(sys.executable).parent / "funart")
        command = [funart, "serve", role, "--host", "127.0.0.1", "--port", str(port)]
        log = open(home / "instance.log", "ab")  # noqa: SIM115 - the child keeps it open
        process = spawn_child(
            in_namespace(self.layout, home / "comfyui", home / "venv", command),
            env=self._environment(function, home, port), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        devstack.wait_for_http(f"{url}/health", process, 60)
        logger.info("Started an instance of %s (pid %s) at %s", function, process.pid, url)
        return Instance(function, url, process)

    async def _initialize(self, instance: Instance) -> None:
        hooks = self.fc.functions[instance.name].get("instanceLifecycleConfig") or {}
        timeout = float((hooks.get("initializer") or {}).get("timeout") or 300)
        async with aiohttp.ClientSession() as session, session.post(
            instance.url + "/initialize", timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"x-fc-request-id": uuid.uuid4().hex},
        ) as response:
            body = await response.text()
        if response.status >= 300:
            await self.stop_instance(instance.name, pre_stop=False)
            raise FunartError(
                f"The Initializer hook of {instance.name} failed with HTTP {response.status}.",
                code="INITIALIZATION_ERROR", status=502, details={"response": body[-2000:]},
            )

    async def stop_instance(self, function: str, *, pre_stop: bool = True) -> dict[str, Any]:
        instance = self.instances.pop(function, None)
        if instance is None:
            return {"function": function, "stopped": False}
        hooks = self.fc.functions[function].get("instanceLifecycleConfig") or {}
        timeout = float((hooks.get("preStop") or {}).get("timeout") or 60)
        result: Any = None
        if pre_stop and instance.process.poll() is None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with aiohttp.ClientSession() as session, session.get(
                    instance.url + "/pre-stop", timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    result = await response.json(content_type=None)
        await asyncio.to_thread(devstack.stop_process, instance.process)
        if instance.proxy is not None:
            await instance.proxy.close()
        logger.info("Stopped the instance of %s", function)
        return {"function": function, "stopped": True, "pre_stop": result}

    async def recycle(self, function: str) -> None:
        # UpdateFunction on FC replaces instances; the next request starts a new one.
        await self.stop_instance(function)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for name, instance in list(self.instances.items()):
                if instance.inflight == 0 and now - instance.last_used > self.idle_s:
                    logger.info("Instance of %s idle for %.0f s; stopping it", name, self.idle_s)
                    await self.stop_instance(name)

    async def _instances_route(self, request: web.Request) -> web.Response:
        return web.json_response({name: {"url": instance.url, "pid": instance.process.pid}
                                  for name, instance in self.instances.items()})

    async def _stop_route(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stop_instance(request.match_info["name"]))

    # ---- HTTP triggers ---------------------------------------------------------------

    def _trigger_app(self, function: str) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                if request.headers.get("x-fc-invocation-type", "").lower() == "async":
                    return await self._enqueue(function, request)
                return await self._forward(function, request)
            except FunartError as exc:
                return web.json_response(exc.to_body(None), status=exc.status)

        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def _forward(self, function: str, request: web.Request) -> web.StreamResponse:
        instance = await self.ensure_instance(function)
        if instance.proxy is None:
            instance.proxy = ComfyProxy(instance.url, lambda: True, _fc_headers)
        instance.inflight += 1
        try:
            return await instance.proxy.handle(request)
        finally:
            instance.inflight -= 1
            instance.last_used = time.monotonic()

    async def _enqueue(self, function: str, request: web.Request) -> web.StreamResponse:
        if not (self.fc.async_configs.get(function) or {}).get("asyncTask"):
            return await self._forward(function, request)
        task_id = request.headers.get("x-fc-async-task-id") or uuid.uuid4().hex
        tasks = self.fc.tasks.setdefault(function, {})
        if task_id in tasks:
            return web.json_response(
                {"code": "AsyncTaskAlreadyExist", "message": f"task {task_id} already exists"},
                status=409)
        body = await request.read()
        tasks[task_id] = {"taskId": task_id, "status": "Enqueued", "startedTime": _now_ms(),
                          "events": [{"status": "Enqueued", "timestamp": _now_ms()}]}
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in {"host", "content-length"}}
        asyncio.ensure_future(
            self._deliver(function, task_id, request.method, request.path_qs, headers, body))
        return web.Response(status=202, headers={"x-fc-async-task-id": task_id})

    async def _deliver(self, function: str, task_id: str, method: str, path: str,
                       headers: dict[str, str], body: bytes) -> None:
        task = self.fc.tasks[function][task_id]
        try:
            instance = await self.ensure_instance(function)
            task["status"] = "Running"
            instance.inflight += 1
            try:
                headers = {**headers, "x-fc-async-task-id": task_id,
                           "x-fc-request-id": uuid.uuid4().hex}
                async with aiohttp.ClientSession() as session, session.request(
                    method, instance.url + path, data=body, headers=headers,
                ) as response:
                    task["returnPayload"] = (await response.text())[:4096]
                    task["status"] = "Succeeded" if response.status < 400 else "Failed"
            finally:
                instance.inflight -= 1
                instance.last_used = time.monotonic()
        except (FunartError, aiohttp.ClientError) as exc:
            task["status"] = "Failed"
            task["taskErrorMessage"] = str(exc)
        task["endTime"] = _now_ms()
        task["events"].append({"status": task["status"], "timestamp": _now_ms()})

    # ---- environment -----------------------------------------------------------------

    def _environment(self, function: str, home: Path, port: int) -> dict[str, str]:
        """Build FC's environment for an instance, with local stand-ins for the cloud."""
        record = self.fc.functions[function]
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("FUNART_", "ALIBABA_CLOUD_", "FC_"))}
        declared = {key: str(value) for key, value in
                    (record.get("environmentVariables") or {}).items()}
        image = self.layout.image
        comfyui_port = self.ports.setdefault(function, devstack.free_port())
        assert self.moto is not None
        local = {
            "FUNART_NAS_ROOT": str(self.layout.nas),
            "FUNART_COMFYUI_DIR": str(image / "comfyui"),
            "FUNART_PYTHON": str(image / "venv" / "bin" / "python"),
            "FUNART_VENV_DIR": str(image / "venv"),
            "FUNART_BASE_MANIFEST": str(self.layout.base_manifest),
            "FUNART_WORK_DIR": str(home / "work"),
            "FUNART_COMFYUI_PORT": str(comfyui_port),
            "FUNART_COMFYUI_ARGS": "--cpu --comfy-api-base http://127.0.0.1:9",
            "FUNART_OSS_ENDPOINT": self.moto.endpoint,
            "FUNART_OSS_BUCKET": self._bucket(),
            "FUNART_FC_ENDPOINT": self.endpoints["fc_api"],
            "FUNART_ALLOW_PRIVATE_URLS": "true",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": devstack.TEST_ACCESS_KEY,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": devstack.TEST_ACCESS_KEY,
            "FC_REGION": str(record.get("region") or "cn-hangzhou"),
            "FC_ACCOUNT_ID": "local",
            "FC_FUNCTION_NAME": function,
            "FC_CUSTOM_LISTEN_PORT": str(port),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        for key in ("FUNART_PIP_INDEX_URL", "FUNART_GITHUB_MIRROR"):
            if key in os.environ:
                local[key] = os.environ[key]
        return {**base, **declared, **local}

    def _bucket(self) -> str:
        for props in self.resources.values():
            bucket = (props.get("environmentVariables") or {}).get("FUNART_OSS_BUCKET")
            if bucket:
                return str(bucket)
        return LOCAL_BUCKET


# s.yaml props that fc3 deploys through other APIs, not parts of the function itself.
_DEPLOY_ONLY = {"region", "triggers", "asyncInvokeConfig", "scalingConfig", "provisionConfig",
                "concurrencyConfig", "code"}


def function_record(props: dict[str, Any]) -> dict[str, Any]:
    """Turn s.yaml props into what GetFunction returns after fc3 deployed them."""
    record = {key: value for key, value in props.items()
              if key not in _DEPLOY_ONLY and value != "auto"}
    # fc3 resolves "auto" (role, VPC, NAS, logs) into real resources, which do not exist
    # locally; FC lists layers as objects.
    if "layers" in record:
        record["layers"] = [{"arn": arn} for arn in record["layers"] if arn]
    name = props["functionName"]
    return {**record, "functionArn": f"acs:fc:local:0:functions/{name}", "state": "Active"}


def _fc_headers(request: web.Request) -> dict[str, str]:
    if "x-fc-request-id" in request.headers:
        return {}
    return {"x-fc-request-id": uuid.uuid4().hex}


def _now_ms() -> int:
    return int(time.time() * 1000)


def run(s_yaml: Path, state: Path, idle_s: float) -> int:
    """Run ``funart local up`` until SIGINT or SIGTERM; every instance gets /pre-stop."""
    if os.geteuid() != 0:
        raise ConfigError("funart local needs root: it gives every instance its own mount "
                          "namespace so snapshots restore to the same paths.")
    runner = LocalRunner(s_yaml, Layout(state.resolve()), idle_s=idle_s)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def main() -> None:
        endpoints = await runner.start()
        (runner.layout.root / "endpoints.json").write_text(json.dumps(endpoints))
        print(json.dumps(endpoints), flush=True)
        await stop.wait()
        await runner.stop()

    loop.run_until_complete(main())
    return 0
