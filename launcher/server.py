"""`mlflow-app serve` at run time: bind, start MLflow under supervision, serve, shut down in order."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import tempfile
import threading
from functools import partial
from pathlib import Path

import uvicorn

from launcher.database_check import DatabaseCheck, postgres_store_uris, store_passwords
from launcher.databricks.child_environment import write_child_plugin, write_sdk_profile
from launcher.databricks.defaults import artifacts_warning, uses_workspace
from launcher.databricks.experiment_folder import prepare_experiment_folder
from launcher.databricks.grants_check import report_grants
from launcher.databricks.sign_in import check_workspace
from launcher.logs import configure_logging
from launcher.mlflow_package import mlflow_version
from launcher.mlflow_process import ChildAddress, MlflowProcess, address_beside, child_address, mlflow_command, mlflow_environment
from launcher.redaction import Redactor
from launcher.settings import Settings, SettingsError, on_databricks_apps
from launcher.supervisor import LivenessProbe, Replacement, Supervisor
from proxy.app import FrontConfig, create_app
from proxy.assets import UiAssets, UiAssetsMissing
from proxy.edge.http_protocol import BoundedHttpToolsProtocol
from proxy.edge.policy import EdgePolicy
from proxy.forwarding.compression import ResponseCompression
from proxy.startup_warnings import StartupWarnings
from proxy.upstream import UpstreamState

log = logging.getLogger("mlflow_app.launcher")
CHILD_STOP_GRACE_SECONDS = 5.0


def bind_socket(host: str, port: int, option: str) -> socket.socket:
    """Bind now, so a taken port is reported before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(f"{option}: port {port} on {host} is already in use; choose another port or stop the process that holds it.") from None
        raise SettingsError(f"{option}: cannot listen on {host}:{port} ({exc.strerror}).") from None
    return sock


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_server(settings: Settings) -> None:
    """Run until SIGTERM or Ctrl-C; raises SettingsError before starting anything that cannot work."""
    redact = Redactor.from_environment(also=(settings.auth_token, *store_passwords(settings)))  # given as flags or inside URIs too
    configure_logging(settings.log_format, settings.log_level, redact, settings.effective_mlflow_log_level)
    if uses_workspace(settings):
        identity = check_workspace()  # a wrong secret or an unreachable host stops us here, in one line
        log.info("workspace %s: signed in as %s (%s)", identity.host, identity.user_name, identity.auth_type)
        prepare_experiment_folder(settings, identity.user_name)  # made if missing; a refusal is one warning, not a stop
    if warning := artifacts_warning(settings):
        log.warning(warning)
    try:
        assets = UiAssets(settings.effective_ui_dir)
    except UiAssetsMissing as exc:
        raise SettingsError(str(exc)) from None
    front_socket = bind_socket(settings.host, settings.port, "--port")
    if settings.mlflow_port:
        bind_socket("127.0.0.1", settings.mlflow_port, "--mlflow-port").close()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    # Mode 0700 (mkdtemp): MLflow's Unix socket inside is ours alone.
    with tempfile.TemporaryDirectory(prefix="mlflow-app-") as private, runner:
        address = child_address(settings, Path(private), free_loopback_port)
        runner.run(run_front_and_mlflow(settings, front_socket, address, assets, redact, Path(private)))


def why_not_beside(settings: Settings, version_at_start: str | None) -> str | None:
    """Why a replacement MLflow cannot start beside the serving one now; None when it can."""
    if settings.mlflow_port:
        return f"--mlflow-port fixes MLflow's port ({settings.mlflow_port}), which two MLflow servers cannot share"
    installed = mlflow_version()
    if installed != version_at_start:  # its schema may need a migration the serving MLflow cannot serve through
        return f"the installed MLflow changed ({version_at_start} to {installed}) and may migrate the database"
    return None


def front_server_config(front, drain_seconds: float, settings: Settings | None = None) -> uvicorn.Config:
    """uvicorn as the front runs: httptools with bounds on the request head and on slow clients, no
    access log of its own."""
    settings = settings or Settings()
    protocol = BoundedHttpToolsProtocol.with_limits(client_idle_seconds=settings.client_idle_timeout, client_min_bytes_per_second=settings.client_min_rate)
    return uvicorn.Config(
        front,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the front appends X-Forwarded-For itself, from the real peer
        server_header=False,
        timeout_graceful_shutdown=drain_seconds,
        timeout_keep_alive=75,  # longer than typical load balancer idle timeouts
        http=protocol,  # httptools with bounds on request heads and slow clients (README: Limits)
        ws="none",  # nothing behind the front speaks WebSocket; an Upgrade is served as plain HTTP
    )


async def run_front_and_mlflow(
    settings: Settings,
    front_socket: socket.socket,
    address: ChildAddress,
    assets: UiAssets,
    redact: Redactor,
    private_dir: Path | None = None,
) -> None:
    state = UpstreamState(base_url=address.base_url, unix_socket=address.unix_socket)
    command = mlflow_command(settings, address.port, address.unix_socket)
    workspace_files = private_dir if private_dir and uses_workspace(settings) else None
    sdk_profile = write_sdk_profile(workspace_files) if workspace_files else None
    child_plugin = write_child_plugin(workspace_files) if workspace_files else None
    env = mlflow_environment(settings, sdk_profile=sdk_profile, child_plugin=child_plugin)
    databases = postgres_store_uris(settings)
    warnings = StartupWarnings()  # e.g. grants the app lacks in its workspace, shown by /health

    def process_at(where: ChildAddress, on_output) -> MlflowProcess:
        where_command = command if where == address else mlflow_command(settings, where.port, where.unix_socket)
        return MlflowProcess(where_command, env, where.base_url, on_output, where.unix_socket, settings.static_prefix)

    def make_beside(on_output, serving: MlflowProcess) -> MlflowProcess:
        return process_at(address_beside(ChildAddress(unix_socket=serving.unix_socket), free_loopback_port), on_output)

    supervisor = Supervisor(
        lambda on_output: process_at(address, on_output),
        state,
        start_timeout=settings.mlflow_start_timeout,
        redact=redact,
        probe=LivenessProbe(
            interval=settings.mlflow_probe_interval,
            timeout=min(5.0, settings.mlflow_probe_interval),
            failures=settings.mlflow_probe_failures,
        ),
        before_start=DatabaseCheck(databases, env) if databases else None,  # reachable, schema migrated once
        replacement=Replacement(
            why_not_beside=partial(why_not_beside, settings, mlflow_version()),
            make_beside=make_beside,
            in_flight_at=lambda base_url, unix_socket: front.upstream.in_use_at(base_url, unix_socket),  # the front is built below
            max_memory=settings.mlflow_max_memory,
            memory_interval=settings.mlflow_probe_interval,
            drain_seconds=settings.drain_seconds,
            stop_grace=CHILD_STOP_GRACE_SECONDS,
        ),
    )
    front = create_app(
        FrontConfig(
            upstream_timeout_seconds=settings.upstream_timeout,
            compression=ResponseCompression(min_bytes=settings.compress_min_bytes, enabled=settings.compress_responses),
            edge_policy=EdgePolicy(settings.allowed_hosts, settings.cors_allowed_origins),
            auth_token=settings.auth_token,
            frame_options=settings.frame_options.upper(),
            trusted_proxies=settings.effective_forwarded_allow_ips,
            public_scheme="https" if on_databricks_apps() else None,  # TLS ends at the platform's proxy
            max_upstream_per_client=settings.max_upstream_per_client,
            static_prefix=settings.static_prefix or "",
        ),
        state,
        assets,
        warnings=warnings,
    )
    server = uvicorn.Server(front_server_config(front, settings.drain_seconds, settings))
    # uvicorn re-raises the stop signal after draining; a handler of ours turns that into a
    # return, so the child is stopped below instead of the process dying with it still running.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, supervisor.reload)  # a new MLflow beside the old one
    serving = asyncio.create_task(server.serve(sockets=[front_socket]))
    supervision: asyncio.Task | None = None
    try:
        # MLflow starts once the front listens, so /health can say "starting" from the first moment.
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        host, port = front_socket.getsockname()[:2]
        log.info("mlflow-app listening on http://%s:%s (MLflow on %s)", host, port, address)
        supervision = asyncio.create_task(supervisor.run())
        if uses_workspace(settings):  # warnings only, in the background: a missing grant does not stop the app
            threading.Thread(target=report_grants, args=(settings, warnings.add), name="grants-check", daemon=True).start()
        await serving
    finally:
        await supervisor.stop(CHILD_STOP_GRACE_SECONDS)
        if supervision:
            supervision.cancel()
        log.info("mlflow-app stopped")
