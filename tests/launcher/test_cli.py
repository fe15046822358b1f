"""The `mlflow-app` command line: the real console script for what an operator sees, CliRunner for
how flags and environment variables become `Settings`."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import launcher.server
from launcher.cli import main, serve
from launcher.settings import Settings, SettingsError
from proxy.edge.policy import DEFAULT_ALLOWED_HOSTS
from tests.app_process import free_port

CONSOLE_SCRIPT = Path(sys.executable).parent / "mlflow-app"
SERVE_OPTIONS = [p for p in serve.params if isinstance(p, click.Option) and p.name != "help"]
ENV_VARS = sorted({name for p in SERVE_OPTIONS for name in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])})
FAIL_WITHIN_SECONDS = 15.0
# The platform sets both; DATABRICKS_APP_NAME is what lets 0.0.0.0 run without a token of ours.
ON_DATABRICKS_APPS = {"DATABRICKS_APP_NAME": "mlflow"}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus every variable `serve` reads, so only the test's values count."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}, **extra)
    return env


@dataclasses.dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict[str, Run]]:
    """Every console-script case below, started at once (each pays ~1-2 s of imports) and collected.

    Each runs in its own session, so anything a wrongly-accepted case starts dies with it."""
    tmp = tmp_path_factory.mktemp("cli")
    blocker = tmp / "a-file"
    blocker.write_text("")
    not_a_build = tmp / "not-a-build"
    not_a_build.mkdir()
    held = [socket.socket(), socket.socket()]
    for sock in held:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    front_held, mlflow_held = (str(sock.getsockname()[1]) for sock in held)
    dirs = iter(range(100))

    def data() -> list[str]:
        return ["--data-dir", str(tmp / f"data-{next(dirs)}")]  # each its own: they start at the same time

    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "help": (["serve", "--help"], {}),
        "port-in-use": (["serve", "--host", "127.0.0.1", "--port", front_held, *data()], {}),
        "mlflow-port-in-use": (["serve", "--port", str(free_port()), "--mlflow-port", mlflow_held, *data()], {}),
        "scheme-foo": (["serve", "--backend-store-uri", "foo://x", *data()], {}),
        "scheme-mongodb-password": (["serve", "--backend-store-uri", "mongodb://admin:hunter2secret@db:27017/mlflow"], {}),
        "unparsable-uri": (["serve", "--backend-store-uri", "postgresql://u:hunter2secret@[oops/db"], {}),
        "data-dir-under-file": (["serve", "--port", str(free_port()), "--data-dir", str(blocker / "data")], {}),
        "ui-dir-no-index": (["serve", "--port", str(free_port()), *data(), "--ui-dir", str(not_a_build)], {}),
        "open-host-no-auth": (["serve", "--host", "0.0.0.0", "--port", str(free_port()), *data()], {}),
        "short-auth-token": (["serve", "--port", str(free_port()), *data()], {"MLFLOW_APP_AUTH_TOKEN": "hunter2secret"}),
    }
    started = time.monotonic()
    processes = {
        name: subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args],
            cwd=tmp,
            env=clean_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        for name, (args, env) in cases.items()
    }
    results: dict[str, Run] = {}
    try:
        for name, process in processes.items():
            left = max(0.1, started + FAIL_WITHIN_SECONDS - time.monotonic())
            try:
                stdout, stderr = process.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                stderr += f"\n[still running after {FAIL_WITHIN_SECONDS} s; killed]"
            results[name] = Run(process.returncode, stdout, stderr, time.monotonic() - started)
        yield results
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for sock in held:
            sock.close()


def assert_one_error_line(run: Run, *expected: str) -> str:
    assert run.code not in (0, None), run
    assert run.seconds < FAIL_WITHIN_SECONDS, run
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: "), run.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --- the real console script -------------------------------------------------------------------


def test_serve_help_documents_every_option(runs):
    run = runs["help"]
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("Usage: mlflow-app serve [OPTIONS]")
    assert "Run MLflow behind the front on one port." in run.stdout
    for option in SERVE_OPTIONS:
        for flag in option.opts + option.secondary_opts:
            assert flag in run.stdout, f"{flag} missing from --help"
        assert option.help and len(option.help.split()) >= 5, f"{option.name} has no real help text"
    assert "[default: 8000]" not in run.stdout  # the default is described, not just a number
    assert "$DATABRICKS_APP_PORT, else 8000" in run.stdout


def test_front_port_in_use(runs):
    assert_one_error_line(runs["port-in-use"], "--port", "already in use")


def test_mlflow_port_in_use(runs):
    assert_one_error_line(runs["mlflow-port-in-use"], "--mlflow-port", "already in use")


@pytest.mark.parametrize("case", ["scheme-foo", "scheme-mongodb-password"])
def test_unknown_backend_scheme(runs, case):
    line = assert_one_error_line(runs[case], "--backend-store-uri", "unknown scheme", "use one of")
    assert "hunter2secret" not in line


def test_unparsable_backend_uri(runs):
    line = assert_one_error_line(runs["unparsable-uri"], "--backend-store-uri", "not a valid URI")
    assert "hunter2secret" not in line


def test_unwritable_data_dir(runs):
    assert_one_error_line(runs["data-dir-under-file"], "--data-dir", "a-file", "MLFLOW_APP_DATA_DIR")


def test_ui_dir_without_index_html(runs):
    assert_one_error_line(runs["ui-dir-no-index"], "--ui-dir", "not-a-build", "index.html")


# --- flags and environment into Settings, through click ----------------------------------------


@pytest.fixture
def captured(monkeypatch, tmp_path) -> list[Settings]:
    """`serve` builds and validates Settings, then hands them here instead of running."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # the default ./mlflow-data lands in the test's directory
    runs: list[Settings] = []
    monkeypatch.setattr(launcher.server, "run_server", runs.append)
    return runs


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["serve", *args], env=env, catch_exceptions=False)


def only_run(result, captured: list[Settings]) -> Settings:
    assert result.exit_code == 0, result.output
    assert len(captured) == 1
    return captured[0]


def test_every_setting_has_an_option_and_every_option_an_env_var():
    options = {p.name for p in SERVE_OPTIONS}
    fields = {f.name for f in dataclasses.fields(Settings)} - {"extra_env"}
    assert options == fields
    assert all(p.envvar for p in SERVE_OPTIONS), [p.name for p in SERVE_OPTIONS if not p.envvar]


def test_every_option_has_a_row_in_the_readme_configuration_table():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`").split(" ")[0]: line for line in readme.splitlines() if line.startswith("| `--")}
    for option in SERVE_OPTIONS:
        row = rows.get(option.opts[0])
        assert row, f"{option.opts[0]} has no row in README's configuration table"
        envvars = [option.envvar] if isinstance(option.envvar, str) else option.envvar
        for name in envvars:
            assert f"`{name}`" in row, f"{name} missing from the README row of {option.opts[0]}"


def test_defaults(captured):
    settings = only_run(invoke(), captured)
    assert settings == Settings()
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.allowed_hosts == DEFAULT_ALLOWED_HOSTS
    assert settings.cors_allowed_origins == ()
    assert (Path.cwd() / "mlflow-data").is_dir()  # validated: created and writable


def test_flags(captured, tmp_path, ui_dir):
    settings = only_run(
        invoke(
            "--host", "0.0.0.0", "--port", "9100", "--backend-store-uri", "postgresql://u:p@h/db",
            "--registry-store-uri", "databricks-uc", "--default-artifact-root", "s3://b/root",
            "--no-serve-artifacts", "--workers", "3", "--job-execution", "--data-dir", str(tmp_path / "d"),
            "--ui-dir", str(ui_dir), "--mlflow-port", "9200", "--log-format", "json", "--log-level", "debug",
            "--upstream-timeout", "12.5", "--mlflow-start-timeout", "30", "--drain-seconds", "0",
            "--allowed-hosts", "mlflow.example.com,*.corp", "--cors-allowed-origins", "https://a.example",
            "--no-auth",
        ),
        captured,
    )  # fmt: skip
    assert settings == Settings(
        host="0.0.0.0", port=9100, backend_store_uri="postgresql://u:p@h/db", registry_store_uri="databricks-uc",
        default_artifact_root="s3://b/root", serve_artifacts=False, workers=3, job_execution=True,
        data_dir=tmp_path / "d", ui_dir=ui_dir, mlflow_port=9200, log_format="json", log_level="debug",
        upstream_timeout=12.5, mlflow_start_timeout=30.0, drain_seconds=0.0,
        allowed_hosts=("mlflow.example.com", "*.corp"), cors_allowed_origins=("https://a.example",), no_auth=True,
    )  # fmt: skip


def test_mlflow_log_level_follows_log_level_unless_set(captured):
    assert only_run(invoke("--log-level", "warning"), captured).effective_mlflow_log_level == "warning"
    captured.clear()
    settings = only_run(invoke("--log-level", "warning", env={"MLFLOW_APP_MLFLOW_LOG_LEVEL": "error"}), captured)
    assert (settings.log_level, settings.mlflow_log_level) == ("warning", "error")


def test_backend_store_uri_from_environment(captured):
    settings = only_run(invoke(env={"MLFLOW_BACKEND_STORE_URI": "sqlite:///from-env.db"}), captured)
    assert settings.backend_store_uri == "sqlite:///from-env.db"


def test_port_from_mlflow_port(captured):
    assert only_run(invoke(env={"MLFLOW_PORT": "9001"}), captured).port == 9001


def test_databricks_app_port_is_the_port_fallback(captured):
    settings = only_run(invoke(env={"DATABRICKS_APP_PORT": "8123", **ON_DATABRICKS_APPS}), captured)
    assert settings.port == 8123
    assert settings.host == "0.0.0.0"  # the platform's proxy must reach us


def test_mlflow_port_beats_databricks_app_port(captured):
    assert only_run(invoke(env={"MLFLOW_PORT": "9001", "DATABRICKS_APP_PORT": "8123", **ON_DATABRICKS_APPS}), captured).port == 9001


def test_flag_beats_environment(captured):
    settings = only_run(invoke("--port", "9300", env={"MLFLOW_PORT": "9001", "DATABRICKS_APP_PORT": "8123", **ON_DATABRICKS_APPS}), captured)
    assert settings.port == 9300


def test_allowed_hosts_and_cors_from_environment(captured):
    env = {
        "MLFLOW_SERVER_ALLOWED_HOSTS": " mlflow.example.com, *.corp.example ,,",
        "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example",
    }
    settings = only_run(invoke(env=env), captured)
    assert settings.allowed_hosts == ("mlflow.example.com", "*.corp.example")
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")


def test_empty_allowed_hosts_keeps_the_defaults(captured):
    assert only_run(invoke(env={"MLFLOW_SERVER_ALLOWED_HOSTS": " , "}), captured).allowed_hosts == DEFAULT_ALLOWED_HOSTS


def test_boolean_and_path_settings_from_environment(captured, tmp_path):
    env = {
        "MLFLOW_SERVE_ARTIFACTS": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
        "MLFLOW_APP_DATA_DIR": str(tmp_path / "env-data"),
        "MLFLOW_HOST": "127.0.0.2",
        "MLFLOW_WORKERS": "2",
        "MLFLOW_APP_LOG_FORMAT": "json",
    }
    settings = only_run(invoke(env=env), captured)
    assert settings.serve_artifacts is False and settings.job_execution is True
    assert settings.data_dir == tmp_path / "env-data"
    assert settings.host == "127.0.0.2" and settings.workers == 2 and settings.log_format == "json"


def test_invalid_settings_never_reach_the_runner(captured):
    result = invoke("--backend-store-uri", "foo://x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --backend-store-uri: unknown scheme 'foo'")
    assert captured == []


def test_settings_error_from_the_runner_is_one_line(monkeypatch, captured):
    def refuse(settings: Settings) -> None:
        raise SettingsError("--port: port 8000 on 127.0.0.1 is already in use; choose another port.")

    monkeypatch.setattr(launcher.server, "run_server", refuse)
    result = invoke()
    assert result.exit_code == 1
    assert result.stderr == "Error: --port: port 8000 on 127.0.0.1 is already in use; choose another port.\n"


def test_group_help_and_version():
    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0 and "serve" in result.stdout and "Run MLflow behind the front on one port." in result.stdout
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.stdout


def test_unknown_scheme_from_environment(captured):
    result = invoke(env={"MLFLOW_BACKEND_STORE_URI": "foo://x"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --backend-store-uri: unknown scheme 'foo' in 'foo://x'")


@pytest.mark.parametrize(("args", "option"), [(["--port", "0"], "--port"), (["--port", "70000"], "--port"), (["--workers", "0"], "--workers")])
def test_out_of_range_numbers(captured, args, option):
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {option}: ") and result.stderr.count("\n") == 1
    assert captured == []


def test_non_integer_port_from_environment(captured):
    result = CliRunner().invoke(main, ["serve"], env={"DATABRICKS_APP_PORT": "eighty"})
    assert result.exit_code == 2  # click's usage error, not a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "--port" in result.stderr and "eighty" in result.stderr


# --- authentication at the front ----------------------------------------------------------------


def test_open_host_without_a_token_is_refused_in_one_line(runs):
    assert_one_error_line(runs["open-host-no-auth"], "--host: 0.0.0.0", "--auth-token", "--no-auth")


def test_short_auth_token_is_refused_without_echoing_it(runs):
    line = assert_one_error_line(runs["short-auth-token"], "--auth-token", "at least 16")
    assert "hunter2secret" not in line


def test_no_auth_lets_an_open_host_start(tmp_path, ui_dir):
    """Only as far as binding the port: the refusal above is the point, not MLflow's readiness.
    A one-file UI build: nothing to precompress, so the front stops at once."""
    port = free_port()
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "serve", "--host", "0.0.0.0", "--port", str(port), "--no-auth", "--data-dir", str(tmp_path / "d"),
         "--ui-dir", str(ui_dir), "--drain-seconds", "0"],
        cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + FAIL_WITHIN_SECONDS
        listening = ""
        while not listening and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            listening = line if "mlflow-app listening on http://0.0.0.0:" in line else ""
        assert listening, f"did not start (exit {process.poll()})"
        while True:  # the line comes just before uvicorn calls listen()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and process.poll() is None, "the port never accepted a connection"
                time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_auth_settings_from_environment(captured):
    token = "env-token-0123456789abcdef"
    settings = only_run(invoke(env={"MLFLOW_APP_AUTH_TOKEN": token}), captured)
    assert settings.auth_token == token and settings.no_auth is False
    captured.clear()
    settings = only_run(invoke("--host", "0.0.0.0", env={"MLFLOW_APP_NO_AUTH": "true"}), captured)
    assert settings.no_auth is True and settings.auth_token is None


def test_open_host_on_databricks_apps_needs_no_token(captured):
    assert only_run(invoke("--host", "0.0.0.0", env=ON_DATABRICKS_APPS), captured).host == "0.0.0.0"


@pytest.mark.parametrize(("args", "env", "expected"), [((), {}, "SAMEORIGIN"), (("--frame-options", "deny"), {}, "DENY"), ((), {"MLFLOW_APP_FRAME_OPTIONS": "NONE"}, "NONE")])
def test_frame_options_from_the_command_line_or_the_environment(captured, args, env, expected):
    assert only_run(invoke(*args, env=env), captured).frame_options == expected


def test_frame_options_refuses_what_is_not_a_choice(captured):
    result = invoke("--frame-options", "ALLOW-FROM x")
    assert result.exit_code == 2 and "--frame-options" in result.output
    assert captured == []
