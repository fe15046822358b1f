"""The mlflow client plugin (launcher/client/request_header_provider.py) and the token it adds (launcher/client/app_token.py).

The plugin is driven through MLflow's own `http_request` against a recording server, so the test
breaks if MLflow stops calling providers from there; the token comes from the stand-in workspace.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from starlette.responses import JSONResponse

from launcher.client.app_token import (
    TOKEN_URLS_ENV,
    AppTokenError,
    DatabricksToken,
    Destination,
    OtherWorkspace,
    TokenTargets,
    apps_workspace_id,
    origin,
)
from launcher.client.auth_types import refusal
from launcher.client.mlflow_client_internals import OutgoingRequest
from launcher.client.request_header_provider import DatabricksAppTokenProvider
from tests.launcher.client.fake_token import FAKE_TOKEN, FakeToken
from tests.launcher.client.recording_server import RecordingServer
from tests.standin.workspace import WORKSPACE_ID, StandinWorkspace

OTHER_WORKSPACE_APP = "https://mlflow-9999999999999999.aws.databricksapps.com"
OWN_WORKSPACE_APP = f"https://mlflow-{WORKSPACE_ID}.aws.databricksapps.com"


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
    ("url", "workspace_id"),
    [
        ("https://mlflow-1234567890123456.aws.databricksapps.com/api/2.0/mlflow/runs/get", "1234567890123456"),
        ("https://mlflow-1234567890123456.9.azure.databricksapps.com/", "1234567890123456"),
        ("https://my-team-mlflow-7474650000000001.gcp.databricksapps.com", "7474650000000001"),  # app names have dashes
        ("HTTPS://MLflow-42.AWS.DatabricksApps.com:443/api", "42"),
    ],
)
def test_databricks_apps_urls_get_the_token_of_the_workspace_their_host_names(url, workspace_id):
    assert TokenTargets().destination(url) == Destination(workspace_id)


@pytest.mark.parametrize(
    "url",
    [
        "http://mlflow-1.aws.databricksapps.com/api",  # plain http: the token would travel in clear
        "https://databricksapps.com/api",
        "https://mlflow.databricksapps.com.example.com/api",
        "https://evildatabricksapps.com/api",
        "https://dbc-1234.cloud.databricks.com/api/2.0/mlflow/runs/get",  # the workspace itself
        "https://mlflow.aws.databricksapps.com/api",  # no workspace id to pin the token to
        "https://mlflow-abc.aws.databricksapps.com/api",
        "https://adb-1234.5.azuredatabricks.net/api",
        "http://127.0.0.1:5000/api",
        "databricks",
        "sqlite:///mlflow.db",
        "",
    ],
)
def test_other_urls_do_not(url):
    assert TokenTargets().destination(url) is None


def test_configured_prefixes_match_scheme_host_port_and_whole_path_segments():
    targets = TokenTargets.from_environment({TOKEN_URLS_ENV: " https://mlflow.example.com/team-a/ , http://127.0.0.1:8123"})
    listed = Destination(None)  # the user's choice: for whatever workspace the credentials are
    assert targets.destination("https://mlflow.example.com/team-a/api/2.0/mlflow/runs/get") == listed
    assert targets.destination("https://MLFLOW.example.com:443/team-a") == listed
    assert targets.destination("http://127.0.0.1:8123/api/2.0/mlflow/experiments/search?max_results=5") == listed
    assert targets.destination("https://mlflow.example.com/team-ab/api") is None
    assert targets.destination("https://mlflow.example.com/api") is None
    assert targets.destination("http://mlflow.example.com/team-a/api") is None
    assert targets.destination("http://127.0.0.1:8124/api") is None
    assert targets.destination("https://127.0.0.1:8123/api") is None


def test_a_listed_apps_url_is_not_pinned_to_a_workspace():
    targets = TokenTargets.from_environment({TOKEN_URLS_ENV: OTHER_WORKSPACE_APP})
    assert targets.destination(f"{OTHER_WORKSPACE_APP}/api/2.0/mlflow/runs/get") == Destination(None)


@pytest.mark.parametrize(
    ("host", "workspace_id"),
    [
        ("mlflow-1234567890123456.aws.databricksapps.com", "1234567890123456"),
        ("a-b-c-5.7.azure.databricksapps.com.", "5"),
        ("mlflow.aws.databricksapps.com", None),
        ("mlflow-12x.aws.databricksapps.com", None),
        ("-.aws.databricksapps.com", None),
        ("mlflow-123.example.com", None),
        ("mlflow-123.databricksapps.com.example.com", None),
    ],
)
def test_the_workspace_id_in_an_apps_host_name(host, workspace_id):
    assert apps_workspace_id(host) == workspace_id


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


def test_outside_http_request_nothing_is_sent_even_when_the_tracking_uri_is_the_app(provider, server, clean_env):
    """Where the target URL cannot be read, the tracking URI is no guide: the call may go anywhere."""
    import mlflow

    clean_env.setenv(TOKEN_URLS_ENV, server.url)
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(server.url)
        assert not provider.in_context() and provider.request_headers() == {}
    finally:
        mlflow.set_tracking_uri(previous)
    assert provider.token.calls == 0


def test_an_apps_url_is_pinned_to_the_workspace_in_its_host_name(provider, clean_env):
    request = OutgoingRequest(f"{OWN_WORKSPACE_APP}/api/2.0/mlflow/runs/get", has_credentials=False)
    assert provider.headers_for(request, TokenTargets().destination(request.url)) == {"Authorization": f"Bearer {FAKE_TOKEN}"}
    assert provider.token.workspace_ids == [WORKSPACE_ID]


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


def test_an_app_of_another_workspace_gets_nothing_and_one_warning(provider, clean_env, caplog):
    clean_env.setattr(provider, "token", FakeToken(OtherWorkspace("the app belongs to workspace 9999999999999999, and the Databricks credentials (…) to workspace 1")))
    request = OutgoingRequest(f"{OTHER_WORKSPACE_APP}/api/2.0/mlflow/runs/get", has_credentials=False)
    with caplog.at_level(logging.WARNING, logger="mlflow_app.client"):
        for _ in range(3):
            assert provider.headers_for(request, TokenTargets().destination(request.url)) == {}
    [warning] = [r.getMessage() for r in caplog.records if r.name == "mlflow_app.client"]
    assert warning.startswith(f"mlflow-app: no Databricks token for {OTHER_WORKSPACE_APP}: the app belongs to workspace 9999999999999999")
    assert warning.endswith(f"list its URL in {TOKEN_URLS_ENV} to send one anyway.")


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


# --- which workspace, and which kind of token -------------------------------------------------


def test_no_token_is_fetched_for_an_app_of_another_workspace(workspace, clean_env):
    for name, value in workspace.oauth_env().items():
        clean_env.setenv(name, value)
    token = DatabricksToken()

    with pytest.raises(OtherWorkspace, match=f"the app belongs to workspace 9999999999999999, and the Databricks credentials \\({workspace.url}\\) to workspace {WORKSPACE_ID}"):
        token.headers("9999999999999999")
    assert "/oidc/v1/token" not in paths(workspace)

    assert token.headers(WORKSPACE_ID)["Authorization"].removeprefix("Bearer ") in workspace.issued_tokens  # not remembered as a failure


def test_the_workspace_id_comes_from_the_host_metadata_without_the_variable(workspace, clean_env):
    for name, value in workspace.oauth_env().items():
        if name != "DATABRICKS_WORKSPACE_ID":
            clean_env.setenv(name, value)
    assert DatabricksToken().headers(WORKSPACE_ID)["Authorization"].removeprefix("Bearer ") in workspace.issued_tokens
    assert "/api/2.0/preview/scim/v2/Me" not in paths(workspace)  # the metadata said it


class OlderControlPlane(StandinWorkspace):
    """A workspace whose discovery metadata names no workspace id; SCIM /Me says it in a header (or not)."""

    org_id_header = True

    async def host_metadata(self, request):
        answer = await super().host_metadata(request)
        body = json.loads(answer.body)
        del body["workspace_id"]
        return JSONResponse(body)

    async def me(self, request):
        answer = await super().me(request)
        if self.org_id_header and answer.status_code == 200:
            answer.headers["X-Databricks-Org-Id"] = WORKSPACE_ID
        return answer


@pytest.fixture
def older_workspace(tmp_path, clean_env):
    with OlderControlPlane(tmp_path / "older", with_mlflow=False) as running:
        for name, value in running.oauth_env().items():
            if name != "DATABRICKS_WORKSPACE_ID":
                clean_env.setenv(name, value)
        yield running


def test_without_the_id_in_the_metadata_the_workspace_is_asked_once(older_workspace):
    token = DatabricksToken()
    with pytest.raises(OtherWorkspace):
        token.headers("9999999999999999")
    assert token.headers(WORKSPACE_ID)["Authorization"].removeprefix("Bearer ") in older_workspace.issued_tokens
    assert paths(older_workspace).count("/api/2.0/preview/scim/v2/Me") == 1


def test_credentials_whose_workspace_cannot_be_told_get_no_token_for_an_app(older_workspace):
    older_workspace.org_id_header = False
    token = DatabricksToken()
    with pytest.raises(AppTokenError, match=rf"cannot tell which workspace .* \(the workspace did not say\), .* set DATABRICKS_WORKSPACE_ID .* in {TOKEN_URLS_ENV}") as failed:
        token.headers(WORKSPACE_ID)
    message = str(failed.value)
    assert "\n" not in message and older_workspace.client_secret not in message
    assert not any(issued in message for issued in older_workspace.issued_tokens)


def test_a_personal_access_token_is_an_error_saying_what_to_use(workspace, clean_env):
    pat = "dapi0123456789abcdef0123456789abcdef"
    clean_env.setenv("DATABRICKS_HOST", workspace.url)
    clean_env.setenv("DATABRICKS_TOKEN", pat)

    with pytest.raises(AppTokenError) as failed:
        DatabricksToken().headers(WORKSPACE_ID)

    message = str(failed.value)
    assert message.startswith("the app accepts Databricks OAuth tokens only, and these Databricks credentials give a personal access token")
    assert f"run `databricks auth login --host {workspace.url} --profile <name>`" in message
    assert pat not in message and "\n" not in message


@pytest.mark.parametrize(
    ("auth_type", "azure_client_id", "gives"),
    [
        ("azure-cli", None, "an Entra ID token"),
        ("azure-client-secret", None, "an Entra ID token"),  # oauth_token() would return it
        ("github-oidc-azure", None, "an Entra ID token"),
        ("external-browser", "11111111-2222-3333-4444-555555555555", "an Entra ID token"),
        ("google-id", None, "a Google ID token"),
        ("basic", None, "a user name and password"),
    ],
)
def test_tokens_the_edge_refuses_are_named(auth_type, azure_client_id, gives):
    message = refusal(auth_type, "https://adb-1.2.azuredatabricks.net", azure_client_id)
    assert message and f"give {gives}" in message and f"(auth type {auth_type})" in message


@pytest.mark.parametrize("auth_type", ["oauth-m2m", "databricks-cli", "external-browser", "env-oidc", "github-oidc", "runtime-oauth", "some-future-type"])
def test_databricks_oauth_sign_ins_are_not_refused(auth_type):
    assert refusal(auth_type, "https://dbc-1.cloud.databricks.com") is None
