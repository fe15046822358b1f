"""Reaching a deployed app from outside the browser, end to end: the real mlflow client (with our
request-header plugin) and `mlflow-app call`, through a stand-in of the Databricks Apps edge that
lets in only OAuth tokens the stand-in workspace issued (not its personal access tokens), to the
real app.

    client process ──Bearer──▶ apps edge (tests/standin/apps_edge.py) ──▶ shared mlflow-app
          └── OAuth M2M ──▶ stand-in workspace (tests/standin/workspace.py), issues the tokens

Clients run as subprocesses, as users run them: their environment is theirs alone, and the
plugin is found through its entry point, not imported by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest

from tests.app_process import APP_COMMAND, QUIET_ENV, free_port
from tests.standin.apps_edge import AppsEdge
from tests.standin.workspace import StandinWorkspace

pytestmark = pytest.mark.e2e
MLFLOW_APP = APP_COMMAND[0]
PAT = "dapi0123456789abcdef0123456789abcdef"  # a personal access token the stand-in workspace accepts

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, tempfile
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment(sys.argv[1])
        notes = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        notes.write_text("through the edge")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metric("loss", 0.125)
            mlflow.log_param("through", "the edge")
            mlflow.log_artifact(str(notes))
        got = client.get_run(run.info.run_id)
        downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="notes.txt")
        print(json.dumps({
            "experiment": client.get_experiment(experiment_id).name,
            "loss": [m.value for m in client.get_metric_history(run.info.run_id, "loss")],
            "params": got.data.params,
            "status": got.info.status,
            "artifact": pathlib.Path(downloaded).read_text(),
        }))
    except MlflowException as exc:
        print(f"MlflowException: {exc}", file=sys.stderr)
        sys.exit(3)
    """
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Token endpoint only: the app's own store is the shared app's SQLite."""
    running = StandinWorkspace(tmp_path_factory.mktemp("apps-workspace"), with_mlflow=False, pat=PAT).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def edge(workspace, app):
    with AppsEdge(workspace, app.url) as running:
        yield running


@pytest.fixture
def home(tmp_path) -> Path:
    """An empty home: no ~/.databrickscfg of the machine's user can stand in for the test's credentials."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def client_env(home: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))}
    return {**base, **QUIET_ENV, "HOME": str(home), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **extra}


def run(command: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_client(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    return run([sys.executable, str(script), f"edge-{uuid.uuid4().hex[:8]}"], env)


def assert_no_token_in(text: str, workspace: StandinWorkspace) -> None:
    for token in workspace.issued_tokens:
        assert token not in text
    assert workspace.client_secret not in text and PAT not in text


def pat_env(workspace: StandinWorkspace) -> dict[str, str]:
    """A user's personal access token: good for the workspace's APIs, refused by the Apps edge."""
    return {"DATABRICKS_HOST": workspace.url, "DATABRICKS_TOKEN": PAT}


# --- the mlflow client --------------------------------------------------------------------------


def test_the_mlflow_client_reaches_the_app_with_a_token_from_databricks_credentials(workspace, edge, home, tmp_path):
    token_requests = sum(r.path == "/oidc/v1/token" for r in workspace.requests)
    edge_seen = len(edge.requests)
    env = client_env(home, **workspace.oauth_env(), MLFLOW_TRACKING_URI=edge.url, MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run_client(tmp_path, env)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])  # mlflow prints "View run" lines first
    assert result["loss"] == [0.125] and result["params"] == {"through": "the edge"} and result["status"] == "FINISHED"
    assert result["artifact"] == "through the edge"
    calls = edge.requests[edge_seen:]
    assert any(c.path.startswith("/api/2.0/mlflow-artifacts/artifacts/") and c.method == "PUT" for c in calls)
    assert len(calls) >= 6 and {c.status for c in calls} == {200}
    assert {c.credential for c in calls} == {"oauth"}
    assert {c.token for c in calls} <= set(workspace.issued_tokens)
    # One sign-in for the whole session: the SDK config and its token are cached in the client.
    assert sum(r.path == "/oidc/v1/token" for r in workspace.requests) == token_requests + 1
    assert_no_token_in(done.stdout + done.stderr, workspace)


def test_without_databricks_credentials_the_client_says_what_to_set(workspace, edge, home, tmp_path):
    env = client_env(home, MLFLOW_TRACKING_URI=edge.url, MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run_client(tmp_path, env)

    assert done.returncode == 3, done.stderr[-3000:]
    assert f"mlflow-app: no Databricks token for {edge.url}: No Databricks credentials found" in done.stderr
    assert "DATABRICKS_CONFIG_PROFILE" in done.stderr
    assert "Traceback" not in done.stderr
    assert "MlflowException:" in done.stderr and "UNAUTHENTICATED" in done.stderr  # the edge's 401


def test_a_url_that_is_neither_an_apps_host_nor_listed_gets_no_token(workspace, edge, home, tmp_path):
    token_requests = sum(r.path == "/oidc/v1/token" for r in workspace.requests)
    edge_seen = len(edge.requests)
    env = client_env(home, **workspace.oauth_env(), MLFLOW_TRACKING_URI=edge.url)  # no MLFLOW_APP_DATABRICKS_TOKEN_URLS

    done = run_client(tmp_path, env)

    assert done.returncode == 3
    assert {c.credential for c in edge.requests[edge_seen:]} == {"none"}
    assert sum(r.path == "/oidc/v1/token" for r in workspace.requests) == token_requests  # not even signed in


def test_a_personal_access_token_is_a_clear_error_and_never_leaves_the_client(workspace, edge, home, tmp_path):
    """databricks-sdk's authenticate() would send the PAT and the edge answer a bare 401."""
    edge_seen = len(edge.requests)
    env = client_env(home, **pat_env(workspace), MLFLOW_TRACKING_URI=edge.url, MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run_client(tmp_path, env)

    assert done.returncode == 3, done.stderr[-3000:]
    assert f"mlflow-app: no Databricks token for {edge.url}: the app accepts Databricks OAuth tokens only" in done.stderr
    assert "give a personal access token" in done.stderr and f"databricks auth login --host {workspace.url}" in done.stderr
    assert {c.credential for c in edge.requests[edge_seen:]} == {"none"}  # not "pat": it was never sent
    assert_no_token_in(done.stdout + done.stderr, workspace)


def test_the_app_sees_the_platforms_user_behind_the_edge(workspace, edge, app):
    token = httpx.post(f"{workspace.url}/oidc/v1/token", data={"grant_type": "client_credentials"}, auth=(workspace.client_id, workspace.client_secret), trust_env=False).json()[
        "access_token"
    ]

    answer = httpx.get(f"{edge.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, headers={"Authorization": f"Bearer {token}"}, trust_env=False)

    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]  # the edge's UUID, kept by the app (the edge is a trusted proxy)
    app.wait_until(lambda: f"id={request_id}" in app.log_text(), 10, "the request log line")
    [line] = [line for line in app.log_text().splitlines() if f"id={request_id}" in line]
    assert line.endswith(f"user={edge.user.email}") and token not in line


# --- mlflow-app call ----------------------------------------------------------------------------


def test_call_posts_json_and_prints_the_answer(workspace, edge, home):
    env = client_env(home, **workspace.oauth_env(), MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run([MLFLOW_APP, "call", f"{edge.url}/api/2.0/mlflow/experiments/search", "POST", '{"max_results": 5}'], env)

    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "HTTP 200 OK"
    assert done.stdout.startswith("{\n  ")  # indented
    assert any(e["name"] == "Default" for e in json.loads(done.stdout)["experiments"])
    assert edge.requests[-1].credential == "oauth" and edge.requests[-1].token in workspace.issued_tokens
    assert_no_token_in(done.stdout + done.stderr, workspace)


def test_call_with_a_path_below_the_tracking_uri_and_get_parameters(workspace, edge, home):
    env = client_env(home, **workspace.oauth_env(), MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url, MLFLOW_TRACKING_URI=edge.url)

    done = run([MLFLOW_APP, "call", "/api/2.0/mlflow/experiments/get-by-name", '{"experiment_name": "Default"}', "GET"], env)
    assert done.returncode == 1 and done.stderr.startswith("Error: METHOD: '{")  # METHOD comes before JSON

    done = run([MLFLOW_APP, "call", "/api/2.0/mlflow/experiments/get-by-name", "GET", '{"experiment_name": "Default"}'], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["experiment"]["experiment_id"] == "0"


def test_call_exits_1_on_an_http_error_and_prints_its_body(workspace, edge, home):
    env = client_env(home, **workspace.oauth_env(), MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run([MLFLOW_APP, "call", f"{edge.url}/api/2.0/mlflow/experiments/get", "GET", '{"experiment_id": "987654321"}'], env)

    assert done.returncode == 1
    assert done.stderr.strip() == "HTTP 404 Not Found"
    assert json.loads(done.stdout)["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_call_with_refused_credentials_is_one_line(workspace, edge, home):
    env = client_env(home, **{**workspace.oauth_env(), "DATABRICKS_CLIENT_SECRET": "not-the-secret-0123456789"}, MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)
    seen = len(edge.requests)

    done = run([MLFLOW_APP, "call", f"{edge.url}/api/2.0/mlflow/experiments/search", "POST", "{}"], env)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Databricks sign-in failed for "), done.stderr
    assert "invalid_client" in lines[0]
    assert "not-the-secret" not in done.stderr
    assert len(edge.requests) == seen  # nothing sent without a token


def test_call_to_an_unreachable_app_is_one_line(workspace, home):
    closed = f"http://127.0.0.1:{free_port()}"
    env = client_env(home, **workspace.oauth_env())

    done = run([MLFLOW_APP, "call", f"{closed}/api/2.0/mlflow/experiments/search", "--timeout", "5"], env)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mlflow-app call: no Databricks token sent: {closed} is not a Databricks Apps URL "
        "(https://<app>-<workspace id>.<region>.databricksapps.com) and not under MLFLOW_APP_DATABRICKS_TOKEN_URLS.",
        f"Error: cannot reach {closed} ([Errno 111] Connection refused).",
    ]


def test_call_with_a_personal_access_token_is_one_line_and_sends_nothing(workspace, edge, home):
    seen = len(edge.requests)
    env = client_env(home, **pat_env(workspace), MLFLOW_APP_DATABRICKS_TOKEN_URLS=edge.url)

    done = run([MLFLOW_APP, "call", f"{edge.url}/api/2.0/mlflow/experiments/search", "POST", "{}"], env)

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: the app accepts Databricks OAuth tokens only, and these Databricks credentials give a personal access token")
    assert PAT not in done.stderr and len(edge.requests) == seen
