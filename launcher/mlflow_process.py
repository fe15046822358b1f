"""The MLflow server child: its command line, start, readiness, output and stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from launcher.databricks.child_environment import child_app_arguments, child_artifacts_destination, child_experiment_folder, workspace_environment
from launcher.databricks.defaults import uses_workspace
from launcher.inside_mlflow.serve_mlflow import STORE_ENV, mlflow_server_command, parse_arguments
from launcher.logs import CHILD_LOGGER
from launcher.settings import Settings, uri_for_message

log = logging.getLogger("mlflow_app.launcher")
mlflow_log = logging.getLogger(CHILD_LOGGER)

# Our own variables that must not leak into the child with a different meaning: MLflow reads
# MLFLOW_HOST/PORT as its bind address and MLFLOW_SERVER_ALLOWED_HOSTS as the hosts it answers,
# but the child binds loopback and only ever sees the front's loopback Host. The front's auth token
# is a credential the child has no use for.
FRONT_ONLY_ENV = ("MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_STATIC_PREFIX", "MLFLOW_APP_AUTH_TOKEN")
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\b")
# Lines that continue the message before them: a traceback, its indented frames, the exception's line.
_CONTINUATION = re.compile(r"^(\s|Traceback \(|During handling of|The above exception|[\w.]+(Error|Exception|Warning)\b)")
PR_SET_PDEATHSIG = 1
SOCKET_NAME = "mlflow.sock"
SPARE_SOCKET_NAME = "mlflow-b.sock"  # a replacement's while the child at SOCKET_NAME still serves, and the other way round
MAX_SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes on Linux, the last one the terminating NUL


@dataclass(frozen=True)
class ChildAddress:
    """Where the MLflow child listens: a Unix socket, or else a port on 127.0.0.1."""

    port: int | None = None
    unix_socket: str | None = None

    @property
    def base_url(self) -> str:
        """The URL the front and our health checks name: on a socket, only its Host counts (localhost, which MLflow accepts)."""
        return "http://localhost" if self.unix_socket else f"http://127.0.0.1:{self.port}"

    def __str__(self) -> str:
        return f"unix:{self.unix_socket}" if self.unix_socket else self.base_url


def is_private_directory(directory: Path) -> bool:
    """Owned by us and closed to everyone else (mode 0700 or stricter): no other account can open a socket inside."""
    try:
        info = directory.stat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077 == 0


def child_address(settings: Settings, private_dir: Path | None, free_port: Callable[[], int]) -> ChildAddress:
    """A Unix socket in `private_dir` when settings ask for one and nothing needs TCP; else a port on 127.0.0.1.

    TCP stays when --mlflow-port is given (the benchmark reaches the child there) and with the job
    runner, which MLflow points at http://<host>:<port> (mlflow/server/__init__.py, _run_server).
    """
    if settings.mlflow_unix_socket:
        if settings.mlflow_port:
            log.info("MLflow on 127.0.0.1:%s rather than a Unix socket: --mlflow-port was given", settings.mlflow_port)
        elif settings.job_execution:
            log.info("MLflow on loopback TCP rather than a Unix socket: its job runner (--job-execution) calls the server over HTTP")
        elif private_dir is None or not is_private_directory(private_dir):
            log.warning("MLflow on loopback TCP rather than a Unix socket: %s is not a directory only we can open", private_dir)
        elif len(os.fsencode(private_dir / SPARE_SOCKET_NAME)) > MAX_SOCKET_PATH_BYTES:  # the longer of the two
            log.warning(
                "MLflow on loopback TCP rather than a Unix socket: a socket in %s would pass the %d-byte limit of its path; "
                "set TMPDIR to a shorter directory", private_dir, MAX_SOCKET_PATH_BYTES,
            )  # fmt: skip
        else:
            return ChildAddress(unix_socket=str(private_dir / SOCKET_NAME))
    return ChildAddress(port=settings.mlflow_port or free_port())


def address_beside(serving: ChildAddress, free_port: Callable[[], int]) -> ChildAddress:
    """Where a replacement listens while the child at `serving` still does: the other socket name
    in the same private directory, or another free loopback port."""
    if serving.unix_socket:
        path = Path(serving.unix_socket)
        return ChildAddress(unix_socket=str(path.with_name(SPARE_SOCKET_NAME if path.name == SOCKET_NAME else SOCKET_NAME)))
    return ChildAddress(port=free_port())


def runs_in_one_process(settings: Settings) -> bool:
    """Whether MLflow runs as one process (launcher/inside_mlflow/serve_mlflow.py) rather than `mlflow server` and its uvicorn child.

    Not with more than one worker (uvicorn's process manager) or with the job runner (which the CLI
    starts beside uvicorn); launcher/inside_mlflow/serve_mlflow.py itself runs `mlflow server` for an MLflow
    version it does not mirror.
    """
    return settings.workers == 1 and not settings.job_execution


def mlflow_command(settings: Settings, port: int | None, unix_socket: str | None = None) -> list[str]:
    """MLflow's server from this environment, on `unix_socket` if given, else on 127.0.0.1:`port`.

    `python -m launcher.inside_mlflow.serve_mlflow` when it can run in one process, else `python -m mlflow
    server` with the same options. No store URI: those reach the child in its environment
    (`store_environment`), since every local user can read a command line and a URI may hold a password.
    """
    address = ["--uds", unix_socket] if unix_socket else ["--host", "127.0.0.1", "--port", str(port)]
    options = [*address, "--workers", str(settings.workers)]
    options += ["--serve-artifacts"] if settings.serve_artifacts else ["--no-serve-artifacts"]
    if settings.static_prefix:  # MLflow's routes, redirects and self-made URLs then match the public paths
        options += ["--static-prefix", settings.static_prefix]
    options += child_app_arguments(settings)
    if runs_in_one_process(settings):
        return [sys.executable, "-m", "launcher.inside_mlflow.serve_mlflow", *options]
    return mlflow_server_command(parse_arguments(options))


def store_environment(settings: Settings) -> dict[str, str | None]:
    """The child's stores by the environment names `mlflow server` reads them from; None for one left to MLflow."""
    names = STORE_ENV
    return {
        names["backend_store_uri"]: settings.effective_backend_store_uri,
        names["registry_store_uri"]: settings.registry_store_uri,
        names["default_artifact_root"]: settings.default_artifact_root,
        names["artifacts_destination"]: child_artifacts_destination(settings) if settings.serve_artifacts else None,
    }


def mlflow_environment(settings: Settings, base: dict[str, str] | None = None, sdk_profile: Path | None = None, child_plugin: Path | None = None) -> dict[str, str]:
    """This process's environment for the child, minus our own variables, plus its settings.

    The stores are the settings' own (`store_environment`), whatever this environment held under
    those names. With a workspace store, also MLflow's retry and timeout settings for calls to the workspace
    and, when given, the databricks-sdk profile file that bounds databricks-sdk's own.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in FRONT_ONLY_ENV}
    for name, value in store_environment(settings).items():
        if value is None:
            env.pop(name, None)  # MLflow's own default, as when the option was left off its command line
        else:
            env[name] = value
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if settings.job_execution else "false"
    if settings.cors_allowed_origins:
        env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(settings.cors_allowed_origins)
    env["PYTHONUNBUFFERED"] = "1"  # its lines reach our log as they happen
    env["MLFLOW_LOGGING_LEVEL"] = settings.effective_mlflow_log_level.upper()  # MLflow's loggers emit what we keep
    if uses_workspace(settings):
        env.update(workspace_environment(env, sdk_profile, child_plugin, child_experiment_folder(settings)))
    env.update(settings.extra_env)
    return env


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the front dies without stopping us (e.g. SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the front's own shutdown path still stops the child


async def spawn(command: list[str], env: dict[str, str], *, own_group: bool = False) -> asyncio.subprocess.Process:
    """A child of ours: stdin closed, stdout and stderr on one pipe, SIGTERM when we die; `own_group` for a new process group."""
    return await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=own_group,
        preexec_fn=die_with_parent,
        limit=1024 * 1024,
    )


async def output_lines(process: asyncio.subprocess.Process) -> AsyncIterator[str]:
    """A `spawn`ed child's output, line by line as it comes, decoded, without blank lines."""
    assert process.stdout
    while line := await process.stdout.readline():
        if text := line.decode("utf-8", "replace").rstrip():
            yield text


def remove_stale_socket(path: str) -> None:
    """Remove a socket file a killed run left behind: with --workers > 1 uvicorn binds it plainly and
    exits on EADDRINUSE. Anything that is not a socket is left alone (and the child says why it fails)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def level_of(line: str, previous: int = logging.INFO) -> int:
    """The level a line of MLflow's output names; a traceback's lines keep the level of the line they follow."""
    match = _LEVEL.search(line[:120])
    if not match:
        return previous if _CONTINUATION.match(line) else logging.INFO
    return logging.WARNING if match.group(1) == "WARN" else logging.getLevelName(match.group(1))


class MlflowProcess:
    """One run of the MLflow server, in its own process group so it can be stopped as a whole."""

    def __init__(self, command: list[str], env: dict[str, str], base_url: str, on_output: Callable[[str], None], unix_socket: str | None = None, static_prefix: str | None = None):
        self.command = command
        self.env = env
        self.base_url = base_url
        self.health_url = f"{base_url}{static_prefix or ''}/health"  # with --static-prefix, MLflow's own is under it too
        self.unix_socket = unix_socket  # when set, MLflow listens here and base_url only names its Host
        self.on_output = on_output
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def listens_at(self) -> str:
        return f"unix:{self.unix_socket}" if self.unix_socket else self.base_url

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self) -> None:
        if self.unix_socket:
            remove_stale_socket(self.unix_socket)
        self.process = await spawn(self.command, self.env, own_group=True)
        self._pump = asyncio.create_task(self._pump_output())
        log.info("started MLflow (pid %s): %s; stores, in its environment: %s", self.process.pid, " ".join(self.command[1:]), self.stores())

    def stores(self) -> str:
        """The stores the child's environment holds, by the options that set them, passwords masked, for the log."""
        given = [f"--{option.replace('_', '-')} {uri_for_message(self.env[name])}" for option, name in STORE_ENV.items() if self.env.get(name)]
        return " ".join(given) or "MLflow's defaults"

    async def _pump_output(self) -> None:
        assert self.process
        level = logging.INFO
        async for text in output_lines(self.process):
            self.on_output(text)
            level = level_of(text, level)
            mlflow_log.log(level, text)

    def health_client(self, timeout: float) -> httpx.AsyncClient:
        """A client for `answers_health`: over the child's Unix socket when it has one."""
        transport = httpx.AsyncHTTPTransport(uds=self.unix_socket) if self.unix_socket else None
        return httpx.AsyncClient(timeout=timeout, trust_env=False, transport=transport)

    async def answers_health(self, client: httpx.AsyncClient) -> bool:
        """Whether MLflow's own `/health` answers 200 within the client's timeout."""
        try:
            return (await client.get(self.health_url)).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet, or too slow

    async def wait_ready(self, timeout: float, interval: float = 0.2) -> bool:
        """True once MLflow's `/health` answers 200; False if it exits or `timeout` passes first."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.health_client(timeout=2.0) as client:
            while asyncio.get_running_loop().time() < deadline:
                if self.returncode is not None:
                    return False
                if await self.answers_health(client):
                    return True
                await asyncio.sleep(interval)
        return False

    async def _exited(self, poll_seconds: float = 0.1) -> int:
        """The exit code, as soon as the process itself exits.

        Not `Process.wait()`: on plain asyncio (3.11) that also waits for the output pipe to close,
        and an orphaned worker of MLflow's keeps it open.
        """
        assert self.process
        while self.process.returncode is None:
            await asyncio.sleep(poll_seconds)
        return self.process.returncode

    async def wait(self) -> int:
        code = await self._exited()
        if self._pump:
            await asyncio.wait([self._pump], timeout=2)  # the last lines usually say why it exited
        return code

    async def stop(self, grace_seconds: float) -> int | None:
        """SIGTERM to the whole group, SIGKILL after `grace_seconds`; returns the exit code."""
        if not self.process:
            return None
        self._signal_group(signal.SIGTERM)
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self._exited(), grace_seconds)
            except TimeoutError:
                log.warning("MLflow did not stop within %.0f s; killing it", grace_seconds)
        # The group may still hold workers whose parent has exited: make sure none survive.
        self._signal_group(signal.SIGKILL)
        code = await self._exited()
        if self._pump:
            self._pump.cancel()
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
