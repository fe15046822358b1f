"""launcher/inside_mlflow/serve_mlflow.py: MLflow's server in one process, set up as `mlflow server` sets it up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import launcher.inside_mlflow.serve_mlflow as serve_mlflow
from launcher.inside_mlflow.serve_mlflow import mlflow_server_command, parse_arguments, supports_installed_mlflow, why_mlflow_server
from launcher.mlflow_process import mlflow_command, mlflow_environment
from launcher.settings import Settings

REPO = Path(__file__).resolve().parents[3]
JOBS_OFF = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as mlflow_environment sets it by default


def options(*extra: str):
    return parse_arguments(["--host", "127.0.0.1", "--port", "5000", "--workers", "1", "--backend-store-uri", "sqlite:///x.db", *extra])


@pytest.mark.parametrize(
    ("version", "supported"),
    [("3.17.2", True), ("3.17.0", True), ("3.18.0", False), ("3.1.7", False), ("4.0.0", False), ("", False)],
)
def test_mirrors_only_the_mlflow_versions_it_was_checked_against(version, supported):
    assert supports_installed_mlflow(version) is supported


def test_the_installed_mlflow_is_one_it_mirrors():
    assert supports_installed_mlflow(), f"MLflow {serve_mlflow.installed_mlflow_version()}: check launcher/inside_mlflow/serve_mlflow.py against it"


def test_one_process_when_nothing_needs_the_cli():
    assert why_mlflow_server(options(), JOBS_OFF) is None
    assert why_mlflow_server(options("--app-name", "mlflow-app-workspace"), JOBS_OFF) is None
    assert why_mlflow_server(options(), {**JOBS_OFF, "MLFLOW_ENABLE_WORKSPACES": "false", "MLFLOW_ARTIFACTS_ONLY": "0"}) is None


@pytest.mark.parametrize(
    ("arguments", "environ", "why"),
    [
        (["--workers", "2"], JOBS_OFF, "--workers 2"),
        ([], {}, "job runner"),  # MLflow's own default is on
        ([], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}, "job runner"),
        (["--app-name", "basic-auth"], JOBS_OFF, "basic-auth"),
        ([], {**JOBS_OFF, "MLFLOW_EXPOSE_PROMETHEUS": "/tmp/metrics"}, "MLFLOW_EXPOSE_PROMETHEUS is set"),
        ([], {**JOBS_OFF, "MLFLOW_UVICORN_OPTS": "--timeout-keep-alive 30"}, "MLFLOW_UVICORN_OPTS is set"),
        ([], {**JOBS_OFF, "MLFLOW_ENABLE_WORKSPACES": "true"}, "MLFLOW_ENABLE_WORKSPACES is set"),
    ],
)
def test_mlflow_server_runs_for_what_this_module_does_not_mirror(arguments, environ, why):
    assert why in why_mlflow_server(options(*arguments), environ)


def test_mlflow_server_runs_when_workers_are_left_to_mlflow():
    parsed = parse_arguments(["--backend-store-uri", "sqlite:///x.db"])
    assert "--workers not given" in why_mlflow_server(parsed, JOBS_OFF)
    assert "--workers" not in mlflow_server_command(parsed)  # MLflow's default (MLFLOW_WORKERS, else 4) applies


def test_mlflow_server_runs_for_another_mlflow_version(monkeypatch):
    monkeypatch.setattr(serve_mlflow, "installed_mlflow_version", lambda: "3.99.0")
    assert "MLflow 3.99.0 is not a version this module mirrors" in why_mlflow_server(options(), JOBS_OFF)


class Exec(Exception):
    pass


@pytest.fixture
def execve(monkeypatch):
    """os.execve replaced: main() raises Exec(path, argv, env) where it would have become `mlflow server`."""

    def execve(path, argv, env):
        raise Exec(path, argv, env)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    for name in serve_mlflow.STORE_ENV.values():
        monkeypatch.delenv(name, raising=False)


def test_the_fallback_execs_mlflow_server_with_the_same_options(execve, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://u:pw-secret@h/db")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://b/served")
    arguments = ["--uds", "/run/x/mlflow.sock", "--workers", "3", "--no-serve-artifacts"]
    with pytest.raises(Exec) as raised:
        serve_mlflow.main(arguments)
    path, argv, env = raised.value.args
    assert path == sys.executable
    assert argv == mlflow_server_command(parse_arguments(arguments))
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert not any("pw-secret" in argument or "s3://" in argument for argument in argv)  # stores stay in the environment
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://u:pw-secret@h/db"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://b/served"
    assert "INFO mlflow_app.child: running `mlflow server`: --workers 3" in capsys.readouterr().err


def test_the_fallback_moves_stores_given_as_options_into_mlflow_servers_environment(execve):
    arguments = ["--workers", "3", "--backend-store-uri", "postgresql://u:pw-secret@h/db", "--default-artifact-root", "s3://b/root"]
    with pytest.raises(Exec) as raised:
        serve_mlflow.main(arguments)
    _, argv, env = raised.value.args
    assert not any("pw-secret" in argument or "--backend-store-uri" in argument for argument in argv)
    assert (env["MLFLOW_BACKEND_STORE_URI"], env["MLFLOW_DEFAULT_ARTIFACT_ROOT"]) == ("postgresql://u:pw-secret@h/db", "s3://b/root")
    assert "MLFLOW_REGISTRY_STORE_URI" not in env  # left to MLflow: the backend store


def test_without_a_backend_store_it_says_which_variable_to_set(execve, capsys):
    with pytest.raises(SystemExit) as exited:
        serve_mlflow.main(["--workers", "1"])
    assert exited.value.code == 2
    assert "ERROR mlflow_app.child: no backend store: set MLFLOW_BACKEND_STORE_URI" in capsys.readouterr().err


def test_stores_are_read_from_the_environment_unless_given():
    environ = {"MLFLOW_BACKEND_STORE_URI": "sqlite:///env.db", "MLFLOW_REGISTRY_STORE_URI": "", "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/a"}
    parsed = parse_arguments(["--backend-store-uri", "sqlite:///flag.db"], environ)
    assert (parsed.backend_store_uri, parsed.registry_store_uri, parsed.artifacts_destination) == ("sqlite:///flag.db", None, "s3://b/a")
    assert parse_arguments([]).backend_store_uri is None  # no environment given: none read


@pytest.mark.parametrize("workers", [1, 3])
def test_both_commands_carry_every_option(tmp_path, workers):
    settings = Settings(
        data_dir=tmp_path, workers=workers, registry_store_uri="sqlite:///r.db", default_artifact_root="s3://b/root",
        artifacts_destination="s3://b/served", static_prefix="/mlflow",
    )  # fmt: skip
    command = mlflow_command(settings, 5123)
    program = ["-m", "launcher.inside_mlflow.serve_mlflow"] if workers == 1 else ["-m", "mlflow", "server"]
    assert command[1 : 1 + len(program)] == program
    parsed = parse_arguments(command[1 + len(program) :], mlflow_environment(settings, {}))  # the same options either way
    assert (parsed.host, parsed.port, parsed.workers, parsed.backend_store_uri) == ("127.0.0.1", 5123, workers, settings.effective_backend_store_uri)
    assert (parsed.registry_store_uri, parsed.default_artifact_root, parsed.artifacts_destination) == ("sqlite:///r.db", "s3://b/root", "s3://b/served")
    assert parsed.serve_artifacts is True
    assert parsed.static_prefix == "/mlflow"
    if workers > 1:
        assert mlflow_server_command(parsed) == command


# MLflow's own CLI, run with the same options but with the spawning of uvicorn replaced: what it
# would give uvicorn (its command line and environment), next to what launcher/inside_mlflow/serve_mlflow.py sets.
PROBE = r"""
import json, os, sys
import mlflow.server as server
import mlflow.server.handlers as handlers
from mlflow.utils.server_cli_utils import resolve_default_artifact_root
from launcher.inside_mlflow.serve_mlflow import CHILD_LOG_CONFIG, mlflow_server_command, parse_arguments, server_environment

options = parse_arguments(sys.argv[1:], os.environ)
root = resolve_default_artifact_root(options.serve_artifacts, options.default_artifact_root, options.backend_store_uri)
ours = server_environment(options, root, os.environ)
captured = {}

class Spawned:
    pid = 0
    def poll(self): return 0
    def wait(self): return 0

def spawn(command, extra_env=None, **kwargs):
    captured.update(command=command, env=extra_env)
    return Spawned()

stores = []
server._exec_cmd = spawn
handlers_initialize = handlers.initialize_backend_stores
handlers.initialize_backend_stores = lambda *args, **kwargs: stores.append([args, kwargs]) or handlers_initialize(*args, **kwargs)
server.signal.signal = lambda *args: None
from mlflow.cli import cli
cli.main(["server", *mlflow_server_command(options)[4:]], standalone_mode=False)
print(json.dumps({
    "cli_env": captured["env"], "cli_command": captured["command"], "cli_stores": stores,
    "cli_workspaces": os.environ.get("MLFLOW_ENABLE_WORKSPACES"), "ours_env": ours, "ours_root": root,
    "log_config": str(CHILD_LOG_CONFIG),
}))
"""


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the embedded default: SQLite, artifacts served from the data directory
        {"serve_artifacts": False, "registry_store_uri": "sqlite:///{tmp}/registry.db"},
        {"default_artifact_root": "s3://bucket/root", "artifacts_destination": "s3://bucket/served"},
        {"static_prefix": "/team/mlflow"},  # MLflow's routes under a sub-path
    ],
)
def test_the_server_is_set_up_as_mlflow_servers_cli_sets_it_up(tmp_path, settings):
    settings = Settings(data_dir=tmp_path, **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()})
    socket_path = str(tmp_path / "mlflow.sock")
    command = mlflow_command(settings, None, socket_path)
    assert command[1:3] == ["-m", "launcher.inside_mlflow.serve_mlflow"]
    env = {**mlflow_environment(settings), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    probe = subprocess.run([sys.executable, "-c", PROBE, *command[3:]], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])

    cli_env, ours_env = seen["cli_env"], seen["ours_env"]
    assert cli_env.pop("_MLFLOW_SERVER_BOOT_ID") and ours_env.pop("_MLFLOW_SERVER_BOOT_ID")  # a new one per start
    assert ours_env.pop("MLFLOW_ENABLE_WORKSPACES") == seen["cli_workspaces"] == "false"  # the CLI writes it into its own environment
    assert ours_env == cli_env
    # The stores opened (and migrated) with the same arguments.
    ((args, kwargs),) = seen["cli_stores"]
    assert args == [settings.effective_backend_store_uri, settings.registry_store_uri or settings.effective_backend_store_uri, seen["ours_root"]]
    assert kwargs == {"workspace_store_uri": None, "read_replica_backend_store_uri": None}
    # uvicorn: MLflow's app, our log config (MLflow's plus a filter), socket and trusted X-Forwarded-For, one worker.
    uvicorn = seen["cli_command"]
    assert uvicorn[1:3] == ["-m", "uvicorn"] and uvicorn[-1] == "mlflow.server.fastapi_app:app"
    assert uvicorn[uvicorn.index("--log-config") + 1] == seen["log_config"]
    assert uvicorn[uvicorn.index("--uds") + 1] == socket_path
    assert uvicorn[uvicorn.index("--forwarded-allow-ips") + 1] == "*"
    assert uvicorn[uvicorn.index("--workers") + 1] == "1"
    assert "--no-access-log" in uvicorn  # the front's request line covers each request
    assert "--factory" not in uvicorn
