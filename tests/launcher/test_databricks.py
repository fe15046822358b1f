"""Databricks mode: defaults, the child's settings for a workspace, and the start-up check, the
latter against the stand-in workspace (tests/standin) over real HTTP, signing in as Databricks Apps
does (OAuth machine-to-machine)."""

from __future__ import annotations

import configparser
import socket
import threading
import time

import pytest
from click.testing import CliRunner

import launcher.databricks as databricks
import launcher.runner
from launcher.cli import main
from launcher.databricks import (
    CHILD_HTTP_ENV,
    SDK_PROFILE,
    WorkspaceCheckFailed,
    artifacts_warning,
    check_variables,
    check_workspace,
    default_backend_store_uri,
    default_log_format,
    default_registry_store_uri,
    first_line,
    uses_workspace,
    workspace_environment,
    write_sdk_profile,
)
from launcher.mlflow_process import mlflow_environment
from launcher.settings import Settings
from tests.standin.workspace import StandinWorkspace

PAT = "dapiSTANDINpat4f1e9c7b3a5d2e8f"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The stand-in without its MLflow: the check signs in and asks who it is, nothing more."""
    with StandinWorkspace(tmp_path_factory.mktemp("standin"), pat=PAT, with_mlflow=False) as running:
        yield running


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No Databricks variable from the machine running the tests, and no ~/.databrickscfg."""
    import os

    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture
def signed_in(workspace, env):
    env(**workspace.oauth_env())
    workspace.requests.clear()
    workspace.faults.token_delay = 0.0
    return workspace


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_off_databricks_apps(env):
    assert default_backend_store_uri() is None
    assert default_registry_store_uri() is None
    assert default_log_format() == "text"


def test_defaults_on_databricks_apps(env):
    env(DATABRICKS_APP_NAME="mlflow")
    assert default_backend_store_uri() == "databricks"
    assert default_registry_store_uri() == "databricks-uc"
    assert default_log_format() == "json"


@pytest.fixture
def serve_settings(env, monkeypatch, tmp_path):
    """`mlflow-app serve` as click parses it, handing its Settings over instead of running."""
    import os

    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    captured: list[Settings] = []
    monkeypatch.setattr(launcher.runner, "serve", captured.append)

    def run(*args: str) -> Settings:
        result = CliRunner().invoke(main, ["serve", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return captured.pop()

    return run


def test_serve_on_databricks_apps_uses_the_workspace(env, serve_settings):
    env(DATABRICKS_APP_NAME="mlflow", DATABRICKS_APP_PORT="8000")
    settings = serve_settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.backend_store_uri, settings.registry_store_uri) == ("databricks", "databricks-uc")
    assert settings.log_format == "json" and uses_workspace(settings)


def test_flags_win_over_the_databricks_apps_defaults(env, serve_settings):
    env(DATABRICKS_APP_NAME="mlflow")
    settings = serve_settings("--host", "127.0.0.1", "--backend-store-uri", "sqlite:///x.db", "--registry-store-uri", "sqlite:///x.db", "--log-format", "text")
    assert (settings.host, settings.backend_store_uri, settings.registry_store_uri, settings.log_format) == ("127.0.0.1", "sqlite:///x.db", "sqlite:///x.db", "text")
    assert not uses_workspace(settings)


def test_serve_elsewhere_keeps_the_embedded_defaults(env, serve_settings):
    settings = serve_settings()
    assert (settings.host, settings.backend_store_uri, settings.registry_store_uri, settings.log_format) == ("127.0.0.1", None, None, "text")


@pytest.mark.parametrize(
    ("backend", "registry", "expected"),
    [
        ("databricks", None, True),
        ("databricks://my-profile", None, True),
        (None, "databricks-uc", True),
        ("sqlite:///x.db", "databricks-uc", True),
        (None, None, False),
        ("postgresql://h/db", "uc:http://localhost:8080", False),  # open-source Unity Catalog
    ],
)
def test_uses_workspace(backend, registry, expected):
    assert uses_workspace(Settings(backend_store_uri=backend, registry_store_uri=registry)) is expected


def test_artifacts_warning_only_on_databricks_apps_without_a_destination(env, tmp_path):
    settings = Settings(backend_store_uri="databricks", data_dir=tmp_path)
    assert artifacts_warning(settings) is None
    env(DATABRICKS_APP_NAME="mlflow")
    assert "lost when it restarts" in artifacts_warning(settings)
    assert "MLFLOW_ARTIFACTS_DESTINATION" in artifacts_warning(settings)
    assert artifacts_warning(Settings(artifacts_destination="/Volumes/main/default/mlflow")) is None
    assert artifacts_warning(Settings(serve_artifacts=False)) is None


# --- the child's environment ---------------------------------------------------------------------


def test_workspace_environment_bounds_mlflows_retries(tmp_path):
    profile = write_sdk_profile(tmp_path)
    extra = workspace_environment({"DATABRICKS_HOST": "https://w.example"}, profile)
    assert {k: extra[k] for k in CHILD_HTTP_ENV} == CHILD_HTTP_ENV
    assert extra["DATABRICKS_CONFIG_FILE"] == str(profile)
    assert extra["DATABRICKS_CONFIG_PROFILE"] == SDK_PROFILE


def test_workspace_environment_keeps_the_operators_values(tmp_path):
    base = {"DATABRICKS_HOST": "https://w.example", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "DATABRICKS_CONFIG_PROFILE": "mine"}
    extra = workspace_environment(base, write_sdk_profile(tmp_path))
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in extra
    assert "DATABRICKS_CONFIG_PROFILE" not in extra and "DATABRICKS_CONFIG_FILE" not in extra


def test_workspace_environment_leaves_databrickscfg_alone_without_a_host(tmp_path):
    """Without DATABRICKS_HOST the credentials come from ~/.databrickscfg, which our file would hide."""
    extra = workspace_environment({}, write_sdk_profile(tmp_path))
    assert "DATABRICKS_CONFIG_FILE" not in extra and "DATABRICKS_CONFIG_PROFILE" not in extra


def test_sdk_profile_holds_timeouts_and_nothing_else(tmp_path):
    parser = configparser.ConfigParser()
    parser.read(write_sdk_profile(tmp_path))
    assert parser.sections() == [SDK_PROFILE]
    assert dict(parser[SDK_PROFILE]) == {"http_timeout_seconds": "15", "retry_timeout_seconds": "10"}


def test_databricks_sdk_reads_the_profile_and_the_environments_credentials(signed_in, tmp_path, monkeypatch):
    """What the child's databricks-sdk sees: our timeouts from the file, the platform's OAuth credentials."""
    from databricks.sdk.config import Config

    for name, value in workspace_environment(dict(__import__("os").environ), write_sdk_profile(tmp_path)).items():
        monkeypatch.setenv(name, value)
    config = Config()
    assert config.http_timeout_seconds == 15 and config.retry_timeout_seconds == 10
    assert config.host == signed_in.url and config.client_id == signed_in.client_id
    assert config.authenticate()["Authorization"].startswith("Bearer eyJstandin.")
    assert config.auth_type == "oauth-m2m"


def test_mlflow_environment_for_a_workspace_store(tmp_path):
    profile = write_sdk_profile(tmp_path)
    base = {"DATABRICKS_HOST": "https://w.example", "DATABRICKS_CLIENT_ID": "id", "DATABRICKS_CLIENT_SECRET": "s3cret-value"}
    env = mlflow_environment(Settings(backend_store_uri="databricks", registry_store_uri="databricks-uc"), base, sdk_profile=profile)
    assert env["DATABRICKS_CLIENT_SECRET"] == "s3cret-value"  # passed through: MLflow signs in with it
    assert env["MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT"] == "10"
    assert env["DATABRICKS_CONFIG_FILE"] == str(profile)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in mlflow_environment(Settings(), base, sdk_profile=profile)


# --- variables -----------------------------------------------------------------------------------


def test_missing_host(env):
    with pytest.raises(WorkspaceCheckFailed, match=r"^DATABRICKS_HOST is not set.*DATABRICKS_CLIENT_SECRET"):
        check_variables({})


def test_missing_host_is_left_to_a_databrickscfg(env, tmp_path):
    (tmp_path / ".databrickscfg").write_text("[DEFAULT]\nhost = https://w.example\ntoken = x\n")
    assert check_variables({}) is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DATABRICKS_CLIENT_ID": "id"}, "^DATABRICKS_CLIENT_SECRET is not set but DATABRICKS_CLIENT_ID is"),
        ({"DATABRICKS_CLIENT_SECRET": "s"}, "^DATABRICKS_CLIENT_ID is not set but DATABRICKS_CLIENT_SECRET is"),
        ({}, "^No credentials for https://w.example: set DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET"),
    ],
)
def test_incomplete_credentials(env, variables, message):
    with pytest.raises(WorkspaceCheckFailed, match=message):
        check_variables({"DATABRICKS_HOST": "https://w.example", **variables})


def test_host_without_a_scheme_is_https_as_databricks_sdk_reads_it(env):
    assert check_variables({"DATABRICKS_HOST": "w.example/", "DATABRICKS_TOKEN": "t"}) == "https://w.example"


def test_host_that_is_no_url(env):
    with pytest.raises(WorkspaceCheckFailed, match="is not a workspace URL"):
        check_variables({"DATABRICKS_HOST": "ftp://w.example", "DATABRICKS_TOKEN": "t"})


# --- the check, against the stand-in -------------------------------------------------------------


def test_oauth_machine_to_machine_sign_in(signed_in):
    identity = check_workspace()
    assert (identity.host, identity.user_name, identity.auth_type) == (signed_in.url, signed_in.client_id, "oauth-m2m")
    calls = [(r.method, r.path, r.status, r.credential) for r in signed_in.requests]
    assert ("POST", "/oidc/v1/token", 200, "basic") in calls  # client ID and secret as Basic credentials
    assert ("GET", "/api/2.0/preview/scim/v2/Me", 200, "oauth") in calls  # with the token just issued
    assert ("GET", "/.well-known/databricks-config", 200, "none") in calls


def test_wrong_client_secret(signed_in, env):
    env(DATABRICKS_CLIENT_SECRET="doseWRONGsecret0a1b2c3d4e5f6")
    with pytest.raises(WorkspaceCheckFailed) as raised:
        check_workspace()
    message = str(raised.value)
    assert message.startswith(f"DATABRICKS_CLIENT_SECRET: {signed_in.url} refused the credentials (invalid_client: Client authentication failed)")
    assert "\n" not in message and "doseWRONGsecret" not in message
    assert [r.path for r in signed_in.requests if r.path.startswith("/api/")] == []  # refused at the token


def test_wrong_client_id(signed_in, env):
    env(DATABRICKS_CLIENT_ID="not-the-app")
    with pytest.raises(WorkspaceCheckFailed, match="invalid_client"):
        check_workspace()


def test_personal_access_token(signed_in, env, monkeypatch):
    monkeypatch.delenv("DATABRICKS_CLIENT_ID")
    monkeypatch.delenv("DATABRICKS_CLIENT_SECRET")
    env(DATABRICKS_TOKEN=PAT)
    identity = check_workspace()
    assert identity.auth_type == "pat"
    assert [r.credential for r in signed_in.requests if r.path.endswith("/Me")] == ["pat"]


def test_refused_token(signed_in, env, monkeypatch):
    monkeypatch.delenv("DATABRICKS_CLIENT_ID")
    monkeypatch.delenv("DATABRICKS_CLIENT_SECRET")
    env(DATABRICKS_TOKEN="dapiNOTvalid00000000000000")
    with pytest.raises(WorkspaceCheckFailed) as raised:
        check_workspace()
    assert str(raised.value).startswith(f"Databricks credentials: {signed_in.url} refused them (Invalid access token)")
    assert "dapiNOTvalid" not in str(raised.value)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host(signed_in, env):
    env(DATABRICKS_HOST=f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(WorkspaceCheckFailed, match=r"^DATABRICKS_HOST: cannot reach http://127\.0\.0\.1:\d+ \(.*refused.*\); check the URL"):
        check_workspace()
    assert time.monotonic() - started < 5  # databricks-sdk would retry a refused connection for minutes


def test_host_that_never_answers(signed_in, env, monkeypatch):
    """Accepts the connection and says nothing: the lookup's own timeout, not a hang."""
    monkeypatch.setattr(databricks, "CHECK_HTTP_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env(DATABRICKS_HOST=f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(WorkspaceCheckFailed, match=r"^DATABRICKS_HOST: http://127\.0\.0\.1:\d+ did not answer within 0.5 s"):
            check_workspace()


def test_token_endpoint_that_never_answers(signed_in):
    """databricks-sdk's token request has no timeout: the check bounds the whole sign-in."""
    signed_in.faults.token_delay = 30
    started = time.monotonic()
    try:
        with pytest.raises(WorkspaceCheckFailed, match=f"^DATABRICKS_HOST: {signed_in.url} did not complete sign-in within 2 s"):
            check_workspace(timeout=2)
    finally:
        signed_in.faults.token_delay = 0
    assert time.monotonic() - started < 10
    assert not [t for t in threading.enumerate() if t.name == "workspace-check" and not t.daemon]


def test_first_line_drops_databricks_sdks_config_dump():
    error = ValueError("default auth: cannot configure default credentials. Config: host=https://x, client_id=y. Env: DATABRICKS_HOST")
    assert first_line(error) == "default auth: cannot configure default credentials"
    assert first_line(ValueError("two\nlines ")) == "two lines"
