"""The MLflow child: its command line and environment, and `MlflowProcess` driving fake children."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from launcher.inside_mlflow.serve_mlflow import CHILD_LOG_CONFIG
from launcher.logs import CHILD_LOGGER
from launcher.mlflow_process import (
    MAX_SOCKET_PATH_BYTES,
    SPARE_SOCKET_NAME,
    ChildAddress,
    MlflowProcess,
    child_address,
    is_private_directory,
    level_of,
    mlflow_command,
    mlflow_environment,
)
from launcher.settings import Settings
from tests.app_process import free_port
from tests.launcher.fake_unix_server import unix_server_command
from tests.launcher.fakes import (
    child_env,
    exit_command,
    is_gone,
    server_command,
    sleep_command,
    wait_gone,
)


def value_of(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --- mlflow_command ----------------------------------------------------------------------------


def test_command_runs_mlflow_in_one_process_with_one_worker_and_no_job_runner(tmp_path):
    command = mlflow_command(Settings(data_dir=tmp_path), 5123)
    assert command[:3] == [sys.executable, "-m", "launcher.inside_mlflow.serve_mlflow"]
    assert value_of(command, "--port") == "5123"


@pytest.mark.parametrize("settings", [Settings(workers=2), Settings(job_execution=True)])
def test_command_runs_this_environments_mlflow_server_for_more(tmp_path, settings):
    command = mlflow_command(dataclasses.replace(settings, data_dir=tmp_path), 5123)
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert value_of(command, "--port") == "5123"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "mlflow.example.com"])
def test_command_always_binds_loopback(tmp_path, host):
    command = mlflow_command(Settings(host=host, data_dir=tmp_path), 5000)
    assert value_of(command, "--host") == "127.0.0.1"
    assert command.count("--host") == 1
    if host != "127.0.0.1":
        assert host not in command


@pytest.mark.parametrize("workers", [1, 4])
def test_command_workers(tmp_path, workers):
    assert value_of(mlflow_command(Settings(workers=workers, data_dir=tmp_path), 5000), "--workers") == str(workers)


STORE_OPTIONS = ("--backend-store-uri", "--registry-store-uri", "--default-artifact-root", "--artifacts-destination")


def assert_no_store_on(command: list[str], *uris: str) -> None:
    """No store option and no store URI (nor a piece of one) on a command line every local user can read."""
    assert not set(STORE_OPTIONS) & {argument.split("=", 1)[0] for argument in command}
    for uri in uris:
        assert not any(uri in argument for argument in command), uri


def test_command_embedded_defaults(tmp_path):
    settings = Settings(data_dir=tmp_path)
    command = mlflow_command(settings, 5000)
    assert "--serve-artifacts" in command
    assert "--no-serve-artifacts" not in command
    assert_no_store_on(command, str(tmp_path.resolve()))
    env = mlflow_environment(settings, {})
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == str(tmp_path.resolve() / "artifacts")
    # Left to MLflow unless set.
    assert "MLFLOW_REGISTRY_STORE_URI" not in env
    assert "MLFLOW_DEFAULT_ARTIFACT_ROOT" not in env


EXPLICIT_STORES = {
    "backend_store_uri": "postgresql://u:pw-secret@h/db",
    "registry_store_uri": "mysql+pymysql://r:pw-registry@h/reg",
    "default_artifact_root": "s3://bucket/root",
    "artifacts_destination": "s3://bucket/served",
}


@pytest.mark.parametrize("workers", [1, 2])
def test_explicit_stores_reach_the_child_in_its_environment_and_never_its_command_line(tmp_path, workers):
    settings = Settings(data_dir=tmp_path, workers=workers, **EXPLICIT_STORES)
    command = mlflow_command(settings, 5000)
    assert_no_store_on(command, *EXPLICIT_STORES.values(), "pw-secret", "pw-registry")
    env = mlflow_environment(settings, {})
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://u:pw-secret@h/db"
    assert env["MLFLOW_REGISTRY_STORE_URI"] == "mysql+pymysql://r:pw-registry@h/reg"
    assert env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == "s3://bucket/root"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://bucket/served"


def test_the_settings_stores_win_over_the_environments():
    # The settings were read from the environment or from flags; a flag wins, and a store left
    # unset is MLflow's default, not a stale value the environment happens to hold.
    base = {"MLFLOW_BACKEND_STORE_URI": "sqlite:///env.db", "MLFLOW_REGISTRY_STORE_URI": "sqlite:///stale.db", "MLFLOW_DEFAULT_ARTIFACT_ROOT": "s3://stale"}
    env = mlflow_environment(Settings(backend_store_uri="sqlite:///flag.db"), base)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "sqlite:///flag.db"
    assert "MLFLOW_REGISTRY_STORE_URI" not in env and "MLFLOW_DEFAULT_ARTIFACT_ROOT" not in env


def test_the_start_log_names_the_stores_with_passwords_masked():
    process = MlflowProcess(["python"], {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:pw-secret@h/db"}, "http://127.0.0.1:1", print)
    assert process.stores() == "--backend-store-uri postgresql://u:***@h/db"
    assert MlflowProcess(["python"], {}, "http://127.0.0.1:1", print).stores() == "MLflow's defaults"


def test_command_no_serve_artifacts(tmp_path):
    settings = Settings(data_dir=tmp_path, serve_artifacts=False, artifacts_destination="s3://b/a")
    command = mlflow_command(settings, 5000)
    assert "--no-serve-artifacts" in command
    assert "--serve-artifacts" not in command
    assert_no_store_on(command, "s3://b/a")
    assert "MLFLOW_ARTIFACTS_DESTINATION" not in mlflow_environment(settings, {"MLFLOW_ARTIFACTS_DESTINATION": "s3://b/a"})


def test_command_on_a_unix_socket_binds_it_and_no_port(tmp_path):
    path = str(tmp_path / "private dir" / "mlflow.sock")
    command = mlflow_command(Settings(data_dir=tmp_path), None, path)
    assert command[1:3] == ["-m", "launcher.inside_mlflow.serve_mlflow"]
    assert "--port" not in command and "--host" not in command
    assert value_of(command, "--uds") == path
    assert_no_store_on(command, "mlflow.db")


def test_mlflow_servers_command_on_a_unix_socket_binds_it_and_no_port(tmp_path):
    path = str(tmp_path / "private dir" / "mlflow.sock")  # a space: MLflow splits the options with shlex
    command = mlflow_command(Settings(data_dir=tmp_path, workers=2), None, path)
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert "--port" not in command and "--host" not in command
    uvicorn_options = ["--uds", path, "--forwarded-allow-ips", "*", "--log-config", str(CHILD_LOG_CONFIG), "--no-access-log"]
    assert shlex.split(value_of(command, "--uvicorn-opts")) == uvicorn_options
    assert value_of(command, "--workers") == "2"
    assert_no_store_on(command, "mlflow.db")


def test_command_on_tcp_passes_no_uvicorn_options(tmp_path):
    assert "--uvicorn-opts" not in mlflow_command(Settings(data_dir=tmp_path), 5000)


# --- child_address -----------------------------------------------------------------------------


@pytest.fixture
def private_dir():
    """A directory as the runner makes it (tempfile.TemporaryDirectory), in the system's temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mlflow-app-") as path:
        yield Path(path)


def test_the_runners_temporary_directory_is_ours_alone(private_dir):
    info = private_dir.stat()
    assert info.st_mode & 0o777 == 0o700
    assert info.st_uid == os.getuid()
    assert is_private_directory(private_dir)


def test_a_directory_others_can_enter_is_not_private(tmp_path):
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    assert not is_private_directory(tmp_path / "open")
    assert not is_private_directory(tmp_path / "missing")


def test_on_a_socket_when_asked(private_dir):
    address = child_address(Settings(mlflow_unix_socket=True), private_dir, free_port=lambda: 1 / 0)
    assert address == ChildAddress(unix_socket=str(private_dir / "mlflow.sock"))
    assert address.base_url == "http://localhost"  # the Host MLflow is sent; its middleware accepts localhost
    assert address.port is None


def test_on_tcp_unless_asked(private_dir):
    address = child_address(Settings(mlflow_unix_socket=False), private_dir, free_port=lambda: 5123)
    assert address == ChildAddress(port=5123)
    assert address.base_url == "http://127.0.0.1:5123" and address.unix_socket is None


@pytest.mark.parametrize(
    ("settings", "port", "why"),
    [
        (Settings(mlflow_unix_socket=True, mlflow_port=5200), 5200, "--mlflow-port was given"),
        (Settings(mlflow_unix_socket=True, job_execution=True), 5123, "job runner"),
    ],
)
def test_tcp_is_kept_where_something_needs_it(private_dir, caplog, settings, port, why):
    caplog.set_level(logging.INFO, logger="mlflow_app")
    assert child_address(settings, private_dir, free_port=lambda: 5123) == ChildAddress(port=port)
    assert any(why in r.getMessage() for r in caplog.records)


def test_tcp_with_a_warning_when_the_socket_path_would_be_too_long(tmp_path, caplog):
    # The longer of the two names a child's socket takes (the second for a replacement beside it) must fit.
    name_length = MAX_SOCKET_PATH_BYTES + 2 - len(os.fsencode(tmp_path / "d" / SPARE_SOCKET_NAME))  # one byte too many
    if name_length < 2:
        pytest.skip(f"pytest's temporary directory {tmp_path} is itself too long for this test")
    deep = tmp_path / ("d" * name_length)
    deep.mkdir(mode=0o700)
    assert len(os.fsencode(deep / SPARE_SOCKET_NAME)) == MAX_SOCKET_PATH_BYTES + 1
    assert child_address(Settings(mlflow_unix_socket=True), deep, free_port=lambda: 5123) == ChildAddress(port=5123)
    assert any("107-byte limit" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # One byte shorter still fits.
    fits = tmp_path / deep.name[:-1]
    fits.mkdir(mode=0o700)
    assert child_address(Settings(mlflow_unix_socket=True), fits, free_port=lambda: 5123).unix_socket == str(fits / "mlflow.sock")


def test_tcp_with_a_warning_when_the_directory_is_not_private(tmp_path, caplog):
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o755)
    assert child_address(Settings(mlflow_unix_socket=True), tmp_path / "open", free_port=lambda: 5123) == ChildAddress(port=5123)
    assert any("only we can open" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# --- mlflow_environment ------------------------------------------------------------------------


def test_environment_drops_the_fronts_own_variables():
    base = {
        "MLFLOW_HOST": "0.0.0.0",
        "MLFLOW_PORT": "8000",
        "MLFLOW_SERVER_ALLOWED_HOSTS": "mlflow.example.com",
        "MLFLOW_STATIC_PREFIX": "/mlflow",
        "DATABRICKS_HOST": "https://example.cloud.databricks.com",
        "PATH": "/usr/bin",
    }
    env = mlflow_environment(Settings(), base)
    for name in ("MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_STATIC_PREFIX"):
        assert name not in env
    assert env["DATABRICKS_HOST"] == "https://example.cloud.databricks.com"
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert base["MLFLOW_PORT"] == "8000"  # the caller's mapping is not modified


def test_environment_defaults_to_this_process(monkeypatch):
    monkeypatch.setenv("MLFLOW_PORT", "8000")
    monkeypatch.setenv("SOME_UNRELATED_SETTING", "kept")
    env = mlflow_environment(Settings())
    assert "MLFLOW_PORT" not in env
    assert env["SOME_UNRELATED_SETTING"] == "kept"


@pytest.mark.parametrize(("job_execution", "value"), [(True, "true"), (False, "false")])
def test_environment_job_execution(job_execution, value):
    # The setting wins over whatever the environment said.
    base = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false" if job_execution else "true"}
    assert mlflow_environment(Settings(job_execution=job_execution), base)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == value


def test_environment_cors_origins():
    env = mlflow_environment(Settings(cors_allowed_origins=("https://a.example", "https://b.example")), {})
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://a.example,https://b.example"
    assert "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" not in mlflow_environment(Settings(), {})


def test_environment_extra_env_last():
    env = mlflow_environment(Settings(extra_env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PYTHONUNBUFFERED": "0"}), {})
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert env["PYTHONUNBUFFERED"] == "0"


# --- level_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2025/01/02 10:00:00 INFO mlflow.store.db.utils: Creating initial MLflow database tables...", logging.INFO),
        ("INFO:     Uvicorn running on http://127.0.0.1:5000", logging.INFO),
        ("ERROR:    Exception in ASGI application", logging.ERROR),
        ("2025/01/02 10:00:00 WARNING mlflow.server: something odd", logging.WARNING),
        ("[2025-01-02 10:00:00 +0000] [42] [WARN] Worker timeout", logging.WARNING),
        ("CRITICAL: out of memory", logging.CRITICAL),
        ("DEBUG sqlalchemy: pool checkout", logging.DEBUG),
        ("Traceback (most recent call last):", logging.INFO),
        ("ERRORS are not a level", logging.INFO),
        ("error: lower case is prose", logging.INFO),
        ("", logging.INFO),
        ("x" * 130 + " ERROR too late in the line to be its level", logging.INFO),
    ],
)
def test_level_of(line, level):
    assert level_of(line) == level


@pytest.mark.parametrize(
    "line",
    [
        "Traceback (most recent call last):",
        '  File "/x/mlflow/server/handlers.py", line 12, in wrapper',
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed",
        "ValueError: bad",
        "During handling of the above exception, another exception occurred:",
    ],
)
def test_a_tracebacks_lines_keep_the_level_of_the_line_before(line):
    assert level_of(line, previous=logging.ERROR) == logging.ERROR


def test_a_new_message_without_a_level_is_info_again():
    assert level_of("Registry store URI not provided. Using backend store URI.", previous=logging.ERROR) == logging.INFO


def test_mlflows_own_logging_level_follows_ours(tmp_path):
    assert mlflow_environment(Settings(data_dir=tmp_path), base={})["MLFLOW_LOGGING_LEVEL"] == "INFO"
    assert mlflow_environment(Settings(data_dir=tmp_path, log_level="warning"), base={})["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    settings = Settings(data_dir=tmp_path, log_level="warning", mlflow_log_level="debug")
    assert mlflow_environment(settings, base={})["MLFLOW_LOGGING_LEVEL"] == "DEBUG"


# --- MlflowProcess with fake children ----------------------------------------------------------


@pytest.fixture
async def spawn():
    """Builds MlflowProcess objects whose output is collected; stops whatever is left at the end."""
    made: list[MlflowProcess] = []

    def spawn(command: list[str], port: int | None = None, **env: str) -> tuple[MlflowProcess, list[str]]:
        lines: list[str] = []
        process = MlflowProcess(command, child_env(**env), f"http://127.0.0.1:{port or free_port()}", lines.append)
        made.append(process)
        return process, lines

    yield spawn
    for process in made:
        if process.process and process.process.returncode is None:
            await process.stop(grace_seconds=0.5)


async def test_wait_ready_true_once_health_answers_200(spawn):
    port = free_port()
    process, lines = spawn(server_command(port, delay=0.4), port)
    await process.start()
    started = time.monotonic()
    assert await process.wait_ready(timeout=10, interval=0.05)
    assert time.monotonic() - started >= 0.35  # not before it listens
    assert process.returncode is None
    assert "INFO listening" in lines


async def test_wait_ready_false_while_health_answers_503(spawn):
    port = free_port()
    process, _ = spawn(server_command(port, unhealthy=1.2), port)
    await process.start()
    started = time.monotonic()
    assert not await process.wait_ready(timeout=0.6, interval=0.05)
    assert 0.55 <= time.monotonic() - started < 3
    assert process.returncode is None  # timing out does not stop it: that is the caller's choice
    assert await process.wait_ready(timeout=10, interval=0.05)


async def test_wait_ready_false_when_it_exits_first(spawn):
    process, lines = spawn(exit_command(3, "ERROR cannot open the database"))
    await process.start()
    started = time.monotonic()
    assert not await process.wait_ready(timeout=30, interval=0.05)
    assert time.monotonic() - started < 3  # it noticed the exit, not the timeout
    assert await process.wait() == 3
    assert process.returncode == 3
    assert lines == ["ERROR cannot open the database"]


async def test_wait_ready_false_after_timeout_when_silent(spawn):
    process, _ = spawn(sleep_command())
    await process.start()
    started = time.monotonic()
    assert not await process.wait_ready(timeout=0.4, interval=0.05)
    assert time.monotonic() - started < 3


async def test_output_lines_reach_on_output_and_the_mlflow_logger(spawn, caplog):
    caplog.set_level(logging.DEBUG, logger=CHILD_LOGGER)
    port = free_port()
    process, lines = spawn(server_command(port), port)
    await process.start()
    assert await process.wait_ready(timeout=10, interval=0.05)
    # Empty lines are dropped, trailing whitespace stripped.
    assert lines[:3] == [f"INFO fake mlflow starting on {port}", "   WARNING trailing spaces", "INFO listening"]
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name == CHILD_LOGGER]
    assert (CHILD_LOGGER, logging.WARNING, "   WARNING trailing spaces") in records
    assert (CHILD_LOGGER, logging.INFO, "INFO listening") in records


async def test_wait_returns_the_code_after_the_last_lines(spawn):
    many = [f"line {n}" for n in range(200)]
    process, lines = spawn(exit_command(7, *many))
    await process.start()
    assert await process.wait() == 7
    assert lines == many


async def test_child_leads_its_own_process_group(spawn):
    process, _ = spawn(sleep_command())
    await process.start()
    assert os.getpgid(process.pid) == process.pid
    assert os.getpgid(process.pid) != os.getpgid(0)


async def test_stop_terminates_a_well_behaved_child_quickly(spawn):
    port = free_port()
    process, _ = spawn(server_command(port), port)
    await process.start()
    assert await process.wait_ready(timeout=10, interval=0.05)
    started = time.monotonic()
    assert await process.stop(grace_seconds=5) == -signal.SIGTERM
    assert time.monotonic() - started < 2
    assert is_gone(process.pid)


async def grandchild_pid(lines: list[str]) -> int:
    for _ in range(200):
        for line in lines:
            if line.startswith("grandchild "):
                return int(line.split()[1])
        await asyncio.sleep(0.02)
    raise AssertionError(f"the fake child never reported its grandchild: {lines}")


async def test_stop_kills_a_grandchild_that_ignores_sigterm(spawn):
    """The grandchild keeps the output pipe open, as MLflow's uvicorn workers do."""
    port = free_port()
    process, lines = spawn(server_command(port), port, SPAWN_GRANDCHILD="inherit")
    await process.start()
    grandchild = await grandchild_pid(lines)
    assert await process.wait_ready(timeout=10, interval=0.05)
    await asyncio.sleep(0.2)  # let the grandchild install its SIGTERM handler
    started = time.monotonic()
    await process.stop(grace_seconds=0.5)
    assert time.monotonic() - started < 0.5 + 1.5
    assert wait_gone(grandchild, timeout=1), "grandchild survived stop()"
    assert is_gone(process.pid)


async def test_stop_reaps_a_detached_grandchild_left_in_the_group(spawn):
    """The child exits on SIGTERM at once; its grandchild (not holding the pipe) is killed anyway."""
    port = free_port()
    process, lines = spawn(server_command(port), port, SPAWN_GRANDCHILD="devnull")
    await process.start()
    grandchild = await grandchild_pid(lines)
    assert await process.wait_ready(timeout=10, interval=0.05)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await process.stop(grace_seconds=5)
    assert time.monotonic() - started < 2  # did not wait out the grace period
    assert wait_gone(grandchild, timeout=1), "grandchild survived stop()"


@pytest.mark.parametrize("grace", [0, 1])
async def test_stop_after_exit_returns_the_code_quietly(spawn, caplog, grace):
    process, _ = spawn(exit_command(4))
    await process.start()
    await process.wait()
    caplog.set_level(logging.INFO, logger="mlflow_app")
    caplog.clear()
    started = time.monotonic()
    assert await process.stop(grace_seconds=grace) == 4
    assert time.monotonic() - started < 0.5
    assert not [r for r in caplog.records if r.name == "mlflow_app.launcher" and r.levelno >= logging.WARNING]


async def test_stop_warns_when_the_grace_period_runs_out(spawn, caplog):
    caplog.set_level(logging.INFO, logger="mlflow_app")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    process, lines = spawn([sys.executable, "-c", stubborn])
    await process.start()
    while not lines:
        await asyncio.sleep(0.02)
    assert await process.stop(grace_seconds=0.3) == -signal.SIGKILL
    assert any("did not stop within" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_stop_before_start_is_a_no_op(spawn):
    process, _ = spawn(sleep_command())
    assert process.pid is None and process.returncode is None
    assert await process.stop(grace_seconds=1) is None


# --- MlflowProcess on a Unix socket ------------------------------------------------------------


def stale_socket_at(path: Path) -> None:
    """A socket file with no one listening, as a killed child leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    assert path.is_socket()


async def test_wait_ready_over_the_unix_socket(private_dir):
    path = str(private_dir / "mlflow.sock")
    process = MlflowProcess(unix_server_command(path), child_env(), "http://localhost", lambda line: None, unix_socket=path)
    try:
        await process.start()
        assert await process.wait_ready(timeout=10, interval=0.05)
        assert process.listens_at == f"unix:{path}"
    finally:
        await process.stop(grace_seconds=0.5)


async def test_a_stale_socket_file_does_not_stop_the_next_start(private_dir):
    path = private_dir / "mlflow.sock"
    stale_socket_at(path)
    lines: list[str] = []
    process = MlflowProcess(unix_server_command(str(path)), child_env(), "http://localhost", lines.append, unix_socket=str(path))
    try:
        await process.start()
        assert await process.wait_ready(timeout=10, interval=0.05), lines
    finally:
        await process.stop(grace_seconds=0.5)


async def test_a_file_that_is_not_a_socket_is_left_alone(private_dir):
    path = private_dir / "mlflow.sock"
    path.write_text("not ours to delete")
    process = MlflowProcess(unix_server_command(str(path)), child_env(), "http://localhost", lambda line: None, unix_socket=str(path))
    await process.start()
    assert not await process.wait_ready(timeout=10, interval=0.05)  # the child could not bind, and exited
    assert await process.wait() == 3
    assert path.read_text() == "not ours to delete"


def test_child_dies_with_a_killed_front(tmp_path: Path):
    """SIGKILL to the front cannot be handled; the child must not outlive it (PR_SET_PDEATHSIG)."""
    front = r"""
import asyncio, os, sys
from launcher.mlflow_process import MlflowProcess

async def main():
    command = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"]
    child = MlflowProcess(command, dict(os.environ), "http://127.0.0.1:1", lambda line: print("child", line, flush=True))
    await child.start()
    await asyncio.sleep(120)

asyncio.run(main())
"""
    process = subprocess.Popen([sys.executable, "-c", front], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        line = process.stdout.readline()
        assert line.startswith("child "), line
        child = int(line.split()[1])
        assert not is_gone(child)
        process.kill()
        process.wait()
        assert wait_gone(child, timeout=3), "the MLflow child outlived a SIGKILLed front"
    finally:
        process.kill()
        process.wait()
