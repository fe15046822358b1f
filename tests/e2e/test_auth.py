"""Authentication at the front, end to end: the real mlflow client with a token, and without one."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import AUTH_TOKEN

pytestmark = pytest.mark.e2e
CLIENT_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def mlflow_client(secured_app, monkeypatch):
    """Returns a function making the real mlflow client for the secured app with the given credentials."""
    import mlflow

    def make(**credentials: str):
        for name in CLIENT_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in credentials.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", secured_app.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a 401 is final; no backoff
        mlflow.set_tracking_uri(secured_app.url)
        return mlflow.MlflowClient(tracking_uri=secured_app.url)

    yield make
    if mlflow.active_run():
        mlflow.end_run()


def test_the_mlflow_client_with_a_bearer_token_works_end_to_end(mlflow_client, tmp_path):
    import mlflow

    client = mlflow_client(MLFLOW_TRACKING_TOKEN=AUTH_TOKEN)
    experiment_id = client.create_experiment(f"auth-{uuid.uuid4().hex[:8]}")
    source = tmp_path / "notes.txt"
    source.write_text("through the front, with a token")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric("loss", 0.25)
        mlflow.log_artifact(str(source))

    assert client.get_metric_history(run.info.run_id, "loss")[0].value == 0.25
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "down")))
    assert (downloaded / "notes.txt").read_text() == "through the front, with a token"


def test_the_mlflow_client_with_basic_credentials_works(mlflow_client):
    client = mlflow_client(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=AUTH_TOKEN)
    experiment_id = client.create_experiment(f"auth-basic-{uuid.uuid4().hex[:8]}")
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


@pytest.mark.parametrize("credentials", [{}, {"MLFLOW_TRACKING_TOKEN": "not-the-token-0123456789"}])
def test_the_mlflow_client_without_the_token_is_refused(mlflow_client, credentials):
    from mlflow.exceptions import MlflowException

    client = mlflow_client(**credentials)
    with pytest.raises(MlflowException) as refused:
        client.search_experiments()
    assert "401" in str(refused.value) or "UNAUTHENTICATED" in str(refused.value)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
     ("POST", "/ajax-api/2.0/mlflow/experiments/create"), ("GET", "/get-artifact?path=x&run_uuid=y")],
)  # fmt: skip
def test_without_a_token_every_path_gets_401_json_with_a_challenge(secured_app, method, path):
    response = httpx.request(method, secured_app.url + path, json={"name": "never-created"} if method == "POST" else None)
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].startswith('Basic realm="mlflow-app"')


def test_basic_auth_opens_the_ui_and_the_api(secured_app):
    with httpx.Client(base_url=secured_app.url, auth=("anyone", AUTH_TOKEN)) as browser:
        assert browser.get("/").status_code == 200
        assert browser.get("/api/2.0/mlflow/experiments/search", params={"max_results": 1}).status_code == 200
    wrong = httpx.get(secured_app.url + "/", auth=("anyone", "wrong-password-0123456789"))
    assert wrong.status_code == 401


def test_health_is_open_without_a_token(secured_app):
    response = httpx.get(secured_app.url + "/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_the_token_never_reaches_the_mlflow_child(secured_app):
    for pid in secured_app.mlflow_pids():
        try:
            environment = psutil.Process(pid).environ()
        except psutil.NoSuchProcess:
            continue
        assert "MLFLOW_APP_AUTH_TOKEN" not in environment
        assert AUTH_TOKEN not in " ".join(psutil.Process(pid).cmdline())
