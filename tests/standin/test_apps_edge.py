"""The Apps edge stand-in (tests/standin/apps_edge.py) holds to the platform's rules: the headers it
sets, the tokens it refuses, and the time it allows a request. The app behind it is a recording
server, so each test sees exactly what reached the app."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

import httpx
import pytest

from tests.launcher.client.recording_server import RecordingServer
from tests.standin.apps_edge import AppsEdge
from tests.standin.workspace import WORKSPACE_ID, StandinWorkspace

PAT = "dapi0123456789abcdef0123456789abcdef"
API_PATH = "/api/2.0/mlflow/experiments/search"


@pytest.fixture
def workspace(tmp_path):
    with StandinWorkspace(tmp_path / "workspace", with_mlflow=False, pat=PAT) as running:
        yield running


@pytest.fixture
def app():
    with RecordingServer() as running:
        yield running


@pytest.fixture
def edge(workspace, app):
    with AppsEdge(workspace, app.url) as running:
        yield running


def oauth_token(workspace: StandinWorkspace) -> str:
    """A token from the workspace's OAuth endpoint, as databricks-sdk gets one (client credentials)."""
    answer = httpx.post(
        f"{workspace.url}/oidc/v1/token",
        data={"grant_type": "client_credentials", "scope": "all-apis"},
        auth=(workspace.client_id, workspace.client_secret),
        trust_env=False,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def call(edge: AppsEdge, token: str | None, path: str = API_PATH, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.get(f"{edge.url}{path}", headers=headers, trust_env=False, timeout=30, **kwargs)


def entra_like_token() -> str:
    """An unsigned JWT shaped like an Entra ID access token for Azure Databricks (its resource id as audience)."""

    def part(document: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    header = {"typ": "JWT", "alg": "RS256", "kid": "standin"}
    claims = {"aud": "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d", "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/", "exp": int(time.time()) + 3600}
    return f"{part(header)}.{part(claims)}.c2lnbmF0dXJl"


# --- the headers the app gets -------------------------------------------------------------------


def test_the_app_gets_every_header_the_platform_sets_and_no_authorization(workspace, app, edge):
    assert call(edge, oauth_token(workspace)).status_code == 200

    [seen] = app.requests
    headers = seen.headers
    assert headers["x-forwarded-host"] == f"127.0.0.1:{edge.port}"
    assert re.fullmatch(rf"\d+@{WORKSPACE_ID}", headers["x-forwarded-user"])  # <user id>@<workspace id>
    assert headers["x-forwarded-email"] == "someone@example.com"
    assert headers["x-forwarded-preferred-username"] == "someone@example.com"
    assert headers["x-real-ip"] == "127.0.0.1"  # the address the edge saw
    assert uuid.UUID(headers["x-request-id"])
    assert "authorization" not in headers
    assert "x-forwarded-access-token" not in headers  # only with user authorization on


def test_what_a_client_claims_about_itself_is_replaced(workspace, app, edge):
    claims = {
        "X-Forwarded-User": "1@1",
        "X-Forwarded-Email": "admin@example.com",
        "X-Forwarded-Preferred-Username": "admin",
        "X-Real-Ip": "10.9.9.9",
        "X-Forwarded-Access-Token": "stolen",
        "X-Request-Id": "chosen-by-the-client",
    }
    assert call(edge, oauth_token(workspace), headers=claims).status_code == 200

    headers = app.requests[-1].headers
    assert headers["x-forwarded-user"].endswith(f"@{WORKSPACE_ID}") and headers["x-forwarded-user"] != "1@1"
    assert headers["x-forwarded-email"] == headers["x-forwarded-preferred-username"] == "someone@example.com"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "x-forwarded-access-token" not in headers
    assert headers["x-request-id"] != "chosen-by-the-client"


def test_with_user_authorization_the_app_gets_the_access_token(workspace, app, edge):
    edge.user_authorization = True
    token = oauth_token(workspace)

    assert call(edge, token).status_code == 200

    assert app.requests[-1].headers["x-forwarded-access-token"] == token
    assert "authorization" not in app.requests[-1].headers


# --- the tokens it admits -----------------------------------------------------------------------


def test_only_an_oauth_token_the_workspace_issued_and_still_valid_passes(workspace, app, edge):
    token = oauth_token(workspace)
    assert call(edge, token).status_code == 200
    assert edge.requests[-1].credential == "oauth" and edge.requests[-1].token == token

    workspace.tokens[token].expires_at = time.time() - 1
    assert call(edge, token).status_code == 401
    assert call(edge, None).status_code == 401
    assert call(edge, "not-a-token").status_code == 401
    assert len(app.requests) == 1


def test_a_personal_access_token_the_workspace_accepts_is_refused_at_the_edge(workspace, app, edge):
    me = httpx.get(f"{workspace.url}/api/2.0/preview/scim/v2/Me", headers={"Authorization": f"Bearer {PAT}"}, trust_env=False)
    assert me.status_code == 200  # a good credential for the workspace's APIs

    refused = call(edge, PAT)

    assert refused.status_code == 401
    assert edge.requests[-1].credential == "pat"  # refused because it is a PAT, not because it is unknown
    assert app.requests == []


def test_an_entra_id_token_is_refused_at_the_edge(workspace, app, edge):
    refused = call(edge, entra_like_token())

    assert refused.status_code == 401
    assert edge.requests[-1].credential == "foreign"
    assert app.requests == []


def test_a_token_is_accepted_on_api_paths_only(workspace, app, edge):
    assert call(edge, oauth_token(workspace), path="/").status_code == 401
    assert app.requests == []


# --- the time it allows -------------------------------------------------------------------------


def test_a_slow_request_is_cut_with_504(workspace, edge, app):
    app.delay = 4
    edge.request_timeout = 1.5
    started = time.monotonic()

    cut = call(edge, oauth_token(workspace))

    assert cut.status_code == 504 and cut.text == "upstream request timeout"
    assert 1.4 < time.monotonic() - started < 3.5
    assert edge.requests[-1].status == 504


def test_the_default_cap_is_the_reported_120_seconds(workspace, app):
    assert AppsEdge(workspace, app.url).request_timeout == 120
