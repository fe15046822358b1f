"""The start-up check of the workspace and its credentials, against the stand-in workspace
(tests/standin) over real HTTP, signing in as Databricks Apps does (OAuth machine-to-machine)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import launcher.databricks.sign_in as sign_in
from launcher.databricks.sign_in import WorkspaceCheckFailed, check_variables, check_workspace
from tests.launcher.databricks.conftest import PAT

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
    monkeypatch.setattr(sign_in, "CHECK_HTTP_TIMEOUT_SECONDS", 0.5)
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
