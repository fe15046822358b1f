"""TokenCheck: the token as bearer or Basic password, refusals, what is open, what reaches MLflow."""

from __future__ import annotations

import base64

import httpx
import pytest

from proxy.app import FrontConfig
from proxy.edge.token_check import TokenCheck, credential_from
from proxy.upstream import UpstreamPhase
from tests.proxy.conftest import UPSTREAM_TIMEOUT

TOKEN = "front-token-0123456789abcdef"
API = "/api/2.0/mlflow/experiments/search"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def authed(start_front):
    return start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, auth_token=TOKEN))


@pytest.fixture
async def http(authed):
    async with httpx.AsyncClient(base_url=authed.url, timeout=10, trust_env=False) as session:
        yield session


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith('Basic realm="mlflow-app"')
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert "Bearer" in body["message"] and TOKEN not in response.text


# --- credential_from --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "credential"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer   abc ", b"abc"),
        (b"BEARER abc", b"abc"),
        (basic("alice", "pw").encode(), b"pw"),
        (basic("", "pw:with:colons").encode(), b"pw:with:colons"),
        (b"Basic " + base64.b64encode("ü:päss".encode()), "päss".encode()),
        (b"Basic !!!notbase64", None),
        (b"Basic " + base64.b64encode(b"no-colon"), None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Digest abc", None),
        (b"", None),
        (b"abc", None),
    ],
)
def test_credential_from(authorization, credential):
    assert credential_from(authorization) == credential


def test_an_empty_token_is_refused_at_construction():
    with pytest.raises(ValueError):
        TokenCheck("")


def test_repr_never_shows_the_token():
    assert TOKEN not in repr(TokenCheck(TOKEN))
    assert TOKEN not in repr(FrontConfig(auth_token=TOKEN))


# --- over HTTP --------------------------------------------------------------------------------


async def test_bearer_token_is_accepted_and_not_forwarded_to_mlflow(http, fake_mlflow):
    response = await http.get(API, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    [call] = fake_mlflow.calls
    assert "authorization" not in {name for name, _ in call["headers"]}
    assert TOKEN not in str(call)


@pytest.mark.parametrize("user", ["", "alice", "any.one@example.com"])
async def test_basic_with_any_user_and_the_token_as_password_is_accepted(http, fake_mlflow, user):
    response = await http.get(API, headers={"Authorization": basic(user, TOKEN)})
    assert response.status_code == 200
    assert "authorization" not in {name for name, _ in fake_mlflow.calls[-1]["headers"]}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        basic(TOKEN, "wrong"),  # the token as user name is not the password
        f"Token {TOKEN}",
        "Basic %%%",
        f"Bearer {TOKEN[:4]}\u00e9",
    ],
)
async def test_missing_or_wrong_credentials_get_401_with_a_basic_challenge(http, fake_mlflow, authorization):
    headers = {"Authorization": authorization.encode("utf-8")} if authorization else {}
    response = await http.get(API, headers=headers)
    assert_refused(response)
    assert fake_mlflow.calls == []  # nothing reached MLflow


async def test_two_authorization_headers_are_refused(authed, fake_mlflow):
    async with httpx.AsyncClient(base_url=authed.url, trust_env=False) as session:
        request = session.build_request("GET", API)
        request.headers = httpx.Headers([("Host", authed.host), ("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")])
        response = await session.send(request)
    assert_refused(response)
    assert fake_mlflow.calls == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/static-files/missing.js"), ("POST", "/ajax-api/2.0/mlflow/runs/create"),
     ("GET", "/get-artifact"), ("GET", "/metrics"), ("PUT", "/api/2.0/mlflow-artifacts/artifacts/x"),
     ("GET", "/health/"), ("GET", "/healthz")],
)  # fmt: skip
async def test_everything_but_health_needs_the_token(http, method, path):
    assert_refused(await http.request(method, path))


async def test_health_is_open(http):
    response = await http.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_ui_is_served_with_the_token(http):
    response = await http.get("/", headers={"Authorization": basic("me", TOKEN)})
    assert response.status_code == 200 and b"<title>MLflow</title>" in response.content


async def test_a_cors_preflight_is_answered_by_the_front_without_credentials(http, fake_mlflow):
    # Browsers never attach credentials to a preflight: the front answers it, so it never opens
    # a way to MLflow without the token.
    calls_before = len(fake_mlflow.calls)
    allowed = await http.options(API, headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    foreign = await http.options(API, headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
    assert foreign.status_code == 400 and foreign.json()["error_code"] == "BAD_REQUEST"
    assert "access-control-allow-origin" not in foreign.headers
    assert len(fake_mlflow.calls) == calls_before
    assert_refused(await http.options(API))  # a plain OPTIONS is no preflight


async def test_host_check_comes_first(http):
    response = await http.get(API, headers={"Host": "attacker.example", "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403


async def test_without_a_token_nothing_is_required_and_authorization_passes_through(client, fake_mlflow):
    response = await client.get(API, headers={"Authorization": "Bearer for-mlflow-itself"})
    assert response.status_code == 200
    assert ["Bearer for-mlflow-itself"] == [v for k, v in fake_mlflow.calls[-1]["headers"] if k == "authorization"]


async def test_health_shows_mlflows_output_only_to_callers_with_the_token(start_front):
    front = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, auth_token=TOKEN), phase=UpstreamPhase.RESTARTING)
    front.state.last_error_lines.append("sqlalchemy.exc.OperationalError: could not connect to db.internal:5432")
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as session:
        anonymous = await session.get("/health")
        wrong = await session.get("/health", headers={"Authorization": "Bearer wrong-token-0123456789"})
        with_token = await session.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    for response in (anonymous, wrong):
        assert response.status_code == 503
        assert response.json()["reason"] == "mlflow is restarting"
        assert "last_output" not in response.json()["mlflow"] and "db.internal" not in response.text
    assert with_token.status_code == 503
    assert with_token.json()["mlflow"]["last_output"] == ["sqlalchemy.exc.OperationalError: could not connect to db.internal:5432"]


async def test_without_a_token_health_shows_mlflows_output_to_all(start_front):
    front = start_front(phase=UpstreamPhase.RESTARTING)
    front.state.last_error_lines.append("boom")
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as session:
        assert (await session.get("/health")).json()["mlflow"]["last_output"] == ["boom"]
