"""The mlflow client plugin (launcher/client/request_header_provider.py) and the token it adds (launcher/client/app_token.py).

The plugin is driven through MLflow's own `http_request` against a recording server, so the test
breaks if MLflow stops calling providers from there; the token comes from the stand-in workspace.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from launcher.client.app_token import TOKEN_URLS_ENV, AppTokenError, DatabricksToken, TokenTargets, origin
from launcher.client.request_header_provider import DatabricksAppTokenProvider
from tests.launcher.client.fake_token import FAKE_TOKEN, FakeToken
from tests.launcher.client.recording_server import RecordingServer
from tests.standin.workspace import StandinWorkspace


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credentials of the machine's user: an empty home, no DATABRICKS_* or MLFLOW_TRACKING_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("DATABRICKS_") or name.startswith("MLFLOW_TRACKING_") or name == TOKEN_URLS_ENV:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return monkeypatch


@pytest.fixture
def provider(clean_env):
    """The instance MLflow registered from our entry point, with a fake token source."""
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    [registered] = [p for p in _request_header_provider_registry if isinstance(p, DatabricksAppTokenProvider)]
    clean_env.setattr(registered, "token", FakeToken())
    return registered


@pytest.fixture
def server():
    with RecordingServer() as running:
        yield running


def mlflow_call(url: str, **kwargs):
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    creds = kwargs.pop("creds", None) or MlflowHostCreds(url)
    return http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0, timeout=10, **kwargs)


# --- which URLs may carry the token -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://mlflow-1234567890123456.aws.databricksapps.com/api/2.0/mlflow/runs/get",
        "https://mlflow-1234567890123456.9.azure.databricksapps.com/",
        "https://mlflow-1234567890123456.gcp.databricksapps.com",
        "HTTPS://MLflow-1.AWS.DatabricksApps.com:443/api",
    ],
)
def test_databricks_apps_urls_get_the_token(url):
    assert TokenTargets().allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://mlflow-1.aws.databricksapps.com/api",  # plain http: the token would travel in clear
        "https://databricksapps.com/api",
        "https://mlflow.databricksapps.com.example.com/api",
        "https://evildatabricksapps.com/api",
        "https://dbc-1234.cloud.databricks.com/api/2.0/mlflow/runs/get",  # the workspace itself
        "https://adb-1234.5.azuredatabricks.net/api",
        "http://127.0.0.1:5000/api",
        "databricks",
        "sqlite:///mlflow.db",
        "",
    ],
)
def test_other_urls_do_not(url):
    assert not TokenTargets().allows(url)


def test_configured_prefixes_match_scheme_host_port_and_whole_path_segments():
    targets = TokenTargets.from_environment({TOKEN_URLS_ENV: " https://mlflow.example.com/team-a/ , http://127.0.0.1:8123"})
    assert targets.allows("https://mlflow.example.com/team-a/api/2.0/mlflow/runs/get")
    assert targets.allows("https://MLFLOW.example.com:443/team-a")
    assert targets.allows("http://127.0.0.1:8123/api/2.0/mlflow/experiments/search?max_results=5")
    assert not targets.allows("https://mlflow.example.com/team-ab/api")
    assert not targets.allows("https://mlflow.example.com/api")
    assert not targets.allows("http://mlflow.example.com/team-a/api")
    assert not targets.allows("http://127.0.0.1:8124/api")
    assert not targets.allows("https://127.0.0.1:8123/api")


def test_a_bad_configured_entry_says_which_and_how():
    with pytest.raises(AppTokenError, match=f"{TOKEN_URLS_ENV}: 'mlflow.example.com' is not an http\\(s\\) URL"):
        TokenTargets.from_environment({TOKEN_URLS_ENV: "https://ok.example.com,mlflow.example.com"})


def test_messages_name_the_origin_only():
    assert origin("https://user:pw@app.example.com:8443/api/2.0/x?name=secret") == "https://app.example.com:8443"


# --- the plugin inside MLflow's http_request ----------------------------------------------------


def test_the_entry_point_is_installed_and_registered():
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    [entry] = [e for e in importlib.metadata.entry_points(group="mlflow.request_header_provider") if e.name == "mlflow-app"]
    assert entry.load() is DatabricksAppTokenProvider
    assert any(isinstance(p, DatabricksAppTokenProvider) for p in _request_header_provider_registry)


def test_a_listed_url_gets_the_token(provider, server, clean_env):
    clean_env.setenv(TOKEN_URLS_ENV, server.url)
    mlflow_call(server.url)
    assert server.requests[-1].headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert server.requests[-1].headers["user-agent"].startswith("mlflow-python-client")  # MLflow's own headers stay


def test_any_other_host_gets_nothing_even_when_the_tracking_uri_is_the_app(provider, server, clean_env):
    import mlflow

    with RecordingServer() as app:
        clean_env.setenv(TOKEN_URLS_ENV, app.url)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(app.url)
        try:
            mlflow_call(server.url)  # e.g. a gateway or a workspace host, from the same process
        finally:
            mlflow.set_tracking_uri(previous)
    assert "authorization" not in server.requests[-1].headers
    assert provider.token.calls == 0


def test_the_users_own_credentials_win(provider, server, clean_env):
    from mlflow.utils.rest_utils import MlflowHostCreds

    clean_env.setenv(TOKEN_URLS_ENV, server.url)
    mlflow_call(server.url, creds=MlflowHostCreds(server.url, token="users-own-token"))  # MLFLOW_TRACKING_TOKEN
    mlflow_call(server.url, creds=MlflowHostCreds(server.url, username="u", password="p"))
    mlflow_call(server.url, extra_headers={"Authorization": "Bearer from-the-caller"})
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer users-own-token", "Basic dTpw", "Bearer from-the-caller"]
    assert provider.token.calls == 0


def test_our_mlflow_child_never_gets_it(provider, server, clean_env):
    """The child's tracking URI is `databricks`: its calls go to the workspace host, which is never listed."""
    clean_env.setenv("MLFLOW_TRACKING_URI", "databricks")
    clean_env.setenv("DATABRICKS_HOST", server.url)
    assert not provider.in_context()  # outside http_request: the tracking URI decides
    mlflow_call(server.url)  # inside: the workspace URL decides
    assert "authorization" not in server.requests[-1].headers and provider.token.calls == 0


def test_outside_http_request_the_tracking_uri_decides(provider, server, clean_env):
    import mlflow

    clean_env.setenv(TOKEN_URLS_ENV, server.url)
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(server.url)
        assert provider.in_context() and provider.request_headers() == {"Authorization": f"Bearer {FAKE_TOKEN}"}
        mlflow.set_tracking_uri("sqlite:///unused.db")
        assert not provider.in_context() and provider.request_headers() == {}
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_failure_is_one_warning_line_and_the_request_goes_without_the_token(provider, server, clean_env, caplog):
    clean_env.setenv(TOKEN_URLS_ENV, server.url)
    clean_env.setattr(provider, "token", FakeToken(AppTokenError("No Databricks credentials found to call the app: set DATABRICKS_HOST …")))
    with caplog.at_level(logging.WARNING, logger="mlflow.tracking.request_header.registry"):
        mlflow_call(server.url)
    [warning] = [r.getMessage() for r in caplog.records if "mlflow-app" in r.getMessage()]
    assert warning == (
        f"Encountered unexpected error during resolving request headers: mlflow-app: no Databricks token for {server.url}: "
        "No Databricks credentials found to call the app: set DATABRICKS_HOST …"
    )
    assert "authorization" not in server.requests[-1].headers


def test_importing_the_plugin_does_not_import_databricks_sdk():
    code = (
        "import sys, mlflow; before = {m for m in sys.modules if m.startswith('databricks')}; "
        "import launcher.client.request_header_provider; "
        "print(sorted({m for m in sys.modules if m.startswith('databricks')} - before))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the token, from the stand-in workspace -----------------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    with StandinWorkspace(tmp_path / "workspace", with_mlflow=False) as running:
        yield running


def paths(workspace: StandinWorkspace) -> list[str]:
    return [r.path for r in workspace.requests]


def test_oauth_m2m_credentials_give_an_issued_token_once(workspace, clean_env):
    for name, value in workspace.oauth_env().items():
        clean_env.setenv(name, value)
    token = DatabricksToken()

    first = token.headers()
    assert first["Authorization"].removeprefix("Bearer ") in workspace.issued_tokens
    assert [token.headers() for _ in range(5)] == [first] * 5
    assert paths(workspace) == ["/.well-known/databricks-config", "/oidc/.well-known/oauth-authorization-server", "/oidc/v1/token"]


def test_threads_share_one_sign_in(workspace, clean_env):
    for name, value in workspace.oauth_env().items():
        clean_env.setenv(name, value)
    workspace.faults.token_delay = 0.3  # all threads arrive while the first sign-in is under way
    token = DatabricksToken()
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(token.headers())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and len({r["Authorization"] for r in results}) == 1
    assert paths(workspace).count("/oidc/v1/token") == 1 and paths(workspace).count("/.well-known/databricks-config") == 1


def test_a_profile_is_read_from_the_config_file(workspace, clean_env, tmp_path):
    config = tmp_path / "databrickscfg"
    config.write_text(f"[standin]\nhost = {workspace.url}\nclient_id = {workspace.client_id}\nclient_secret = {workspace.client_secret}\n")
    clean_env.setenv("DATABRICKS_CONFIG_FILE", str(config))
    assert DatabricksToken("standin").headers()["Authorization"].removeprefix("Bearer ") in workspace.issued_tokens


def test_no_credentials_say_what_to_set(clean_env):
    with pytest.raises(AppTokenError) as failed:
        DatabricksToken().headers()
    message = str(failed.value)
    assert message.startswith("No Databricks credentials found to call the app: set DATABRICKS_HOST with DATABRICKS_CLIENT_ID")
    assert "DATABRICKS_CONFIG_PROFILE" in message and "\n" not in message


def test_refused_credentials_are_one_line_without_the_secret_and_not_retried_at_once(workspace, clean_env):
    for name, value in {**workspace.oauth_env(), "DATABRICKS_CLIENT_SECRET": "wrong-secret-0123456789"}.items():
        clean_env.setenv(name, value)
    token = DatabricksToken()
    with pytest.raises(AppTokenError) as failed:
        token.headers()
    assert str(failed.value).startswith(f"Databricks sign-in failed for {workspace.url}: ")
    assert "invalid_client: Client authentication failed" in str(failed.value)
    assert "wrong-secret" not in str(failed.value) and "Config:" not in str(failed.value)
    seen = len(workspace.requests)
    with pytest.raises(AppTokenError):
        token.headers()
    assert len(workspace.requests) == seen  # the failure is remembered for a minute


def test_a_hung_token_endpoint_fails_within_the_timeout(workspace, clean_env):
    for name, value in workspace.oauth_env().items():
        clean_env.setenv(name, value)
    workspace.faults.token_delay = 5
    with pytest.raises(AppTokenError, match=r"did not finish within 0.5 s; check that the workspace is reachable"):
        DatabricksToken(timeout=0.5).headers()


def test_an_unknown_profile_names_it(clean_env, tmp_path: Path):
    config = tmp_path / "databrickscfg"
    config.write_text("[other]\nhost = https://example.invalid\ntoken = x\n")
    clean_env.setenv("DATABRICKS_CONFIG_FILE", str(config))
    with pytest.raises(AppTokenError, match="profile nope"):
        DatabricksToken("nope").headers()
