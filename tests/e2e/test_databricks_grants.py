"""Grants the app's service principal lacks, in Databricks mode against the stand-in workspace: the
real mlflow client through the app gets an MLflow-shaped 403 that names the missing grant, at
once (no retries, counted in the stand-in's requests), and `/health` lists the grants the app
needs but lacks as warnings while it stays 200.

The shared app and stand-in are used with grants enforced for one test at a time and restored
after (`Grants.restored_after`); the start-up check needs an app of its own, started with grants
missing."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import httpx
import pytest
from mlflow.exceptions import MlflowException

from tests.e2e.conftest import platform_env, running_databricks_app

pytestmark = pytest.mark.e2e

VOLUME = "main.default.mlflow-artifacts"  # conftest.VOLUME as a Unity Catalog name
VOLUME_FILES = "/api/2.0/fs/files/Volumes/main/default/mlflow-artifacts/"
VOLUME_DIRECTORIES = "/api/2.0/fs/directories/Volumes/main/default/mlflow-artifacts/"
# The client's own retries of 5xx answers, short enough that a retry loop shows within the test.
THEIR_FOLDER = "/Users/pat-user@example.com"  # the stand-in's other user: the app may not create there
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@contextmanager
def refusals_kept_here(workspace):
    """The 403s provoked inside are taken out of the session's request record afterwards: other
    modules read it as what the app did with every grant (test_databricks_mode: no call refused)."""
    start = len(workspace.requests)
    try:
        yield
    finally:
        workspace.requests[start:] = [r for r in workspace.requests[start:] if r.status != 403]


@pytest.fixture
def grants(standin_workspace, monkeypatch):
    """The stand-in's grants, enforced with everything the app needs; restored after the test."""
    for name, value in CLIENT_RETRIES.items():
        monkeypatch.setenv(name, value)
    with refusals_kept_here(standin_workspace), standin_workspace.grants.restored_after() as held:
        grant_everything_the_app_needs(held.enforce(), standin_workspace.client_id)
        yield held


def grant_everything_the_app_needs(grants, principal: str) -> None:
    grants.grant(principal, "USE CATALOG", "catalog", "main")
    grants.grant(principal, "USE SCHEMA", "schema", "main.default")
    grants.grant(principal, "CREATE MODEL", "schema", "main.default")
    grants.grant(principal, "READ VOLUME", "volume", VOLUME)
    grants.grant(principal, "WRITE VOLUME", "volume", VOLUME)


def calls_since(workspace, start: int, method: str, prefix: str) -> list:
    return [r for r in workspace.requests[start:] if r.method == method and r.path.startswith(prefix)]


def test_an_upload_without_write_volume_is_a_403_naming_it_without_retries(client, grants, standin_workspace, tmp_path):
    run = client.create_run(client.create_experiment(f"/Shared/grants-upload-{time.time_ns()}"))
    grants.revoke(standin_workspace.client_id, "WRITE VOLUME", "volume", VOLUME)
    notes = tmp_path / "notes.txt"
    notes.write_text("refused")
    start = len(standin_workspace.requests)
    began = time.monotonic()
    with pytest.raises(Exception) as refused:
        client.log_artifact(run.info.run_id, str(notes))
    elapsed = time.monotonic() - began
    message = str(refused.value)
    assert "403" in message and "PERMISSION_DENIED" in message, message
    assert f"missing grant: WRITE VOLUME on {VOLUME}" in message, message
    assert "Traceback" not in message
    # One upload reached the workspace: the client did not retry, nor did the app.
    assert [r.status for r in calls_since(standin_workspace, start, "PUT", VOLUME_FILES)] == [403]
    assert elapsed < 10
    assert not list((standin_workspace.files_root / "volumes").rglob("notes.txt"))


def test_listing_and_downloads_without_read_volume_are_403s_naming_it(client, grants, standin_workspace, databricks_app, tmp_path):
    import mlflow

    run = client.create_run(client.create_experiment(f"/Shared/grants-read-{time.time_ns()}"))
    client.log_text(run.info.run_id, "kept", "notes.txt")
    grants.revoke(standin_workspace.client_id, "READ VOLUME", "volume", VOLUME)
    start = len(standin_workspace.requests)
    with pytest.raises(Exception) as listing:
        client.list_artifacts(run.info.run_id)
    # By its mlflow-artifacts URI: MlflowClient.download_artifacts(run_id, …) goes through runs:/,
    # which MLflow 3.17 turns into "Failed to download artifacts from path …" whatever the cause.
    with pytest.raises(Exception) as download:
        mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/notes.txt", dst_path=str(tmp_path), tracking_uri=databricks_app.url)
    for refused in (listing.value, download.value):
        assert f"missing grant: READ VOLUME on {VOLUME}" in str(refused), str(refused)
    # The answer itself, as any HTTP client sees it: MLflow's error shape, status 403.
    path = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    answer = httpx.get(f"{databricks_app.url}/api/2.0/mlflow-artifacts/artifacts/{path}/notes.txt", timeout=60)
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "PERMISSION_DENIED"
    assert f"missing grant: READ VOLUME on {VOLUME}" in answer.json()["message"]
    refusals = [r for r in standin_workspace.requests[start:] if r.path.startswith(("/api/2.0/fs/",))]
    assert refusals and all(r.status == 403 for r in refusals)
    assert len(refusals) <= 3  # one per call: list, download, the raw GET


def test_registering_a_model_without_create_model_is_a_403_naming_it(client, grants, standin_workspace):
    grants.revoke(standin_workspace.client_id, "CREATE MODEL", "schema", "main.default")
    start = len(standin_workspace.requests)
    with pytest.raises(MlflowException) as refused:
        client.create_registered_model("main.default.refused")
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert "missing grant: CREATE MODEL on main.default" in refused.value.message, refused.value.message
    assert "Config:" not in refused.value.message and standin_workspace.url not in refused.value.message
    assert "main.default.refused" not in standin_workspace.unity_catalog.models
    creates = calls_since(standin_workspace, start, "POST", "/api/2.0/mlflow/unity-catalog/registered-models/create")
    assert [r.status for r in creates] == [403]


def test_a_model_without_execute_is_not_listed_and_loading_it_is_a_403_naming_it(client, grants, standin_workspace, databricks_app, tmp_path):
    import mlflow

    # A schema of its own: test_databricks_models lists what is in main.default.
    grants.grant(standin_workspace.client_id, "USE SCHEMA", "schema", "main.grants_e2e").grant(standin_workspace.client_id, "CREATE MODEL", "schema", "main.grants_e2e")
    name = f"main.grants_e2e.model{time.time_ns()}"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    # Unity Catalog takes only models with a signature.
    (model_dir / "MLmodel").write_text('flavors: {}\nsignature:\n  inputs: \'[{"type": "double"}]\'\n  outputs: \'[{"type": "double"}]\'\n')
    run = client.create_run(client.create_experiment(f"/Shared/grants-model-{time.time_ns()}"))
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.create_registered_model(name)
    client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    # Someone else owns it now, and the app's principal was granted no EXECUTE on it.
    assert name in [m.name for m in client.search_registered_models(filter_string="name LIKE 'main.grants_e2e.%'")]
    grants.set_owner("someone-else@example.com", "registered_model", name)
    # Searches list only what the app may read: the model is gone from them.
    assert name not in [m.name for m in client.search_registered_models(filter_string="name LIKE 'main.grants_e2e.%'")]
    assert name not in [m.name for m in client.search_registered_models()]
    start = len(standin_workspace.requests)
    with pytest.raises(Exception) as refused:
        mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "back"), tracking_uri=databricks_app.url)
    message = str(refused.value)
    assert f"EXECUTE on {name}" in message, message
    assert "500" not in message.split("missing grant")[0]
    gets = calls_since(standin_workspace, start, "GET", "/api/2.0/mlflow/unity-catalog/model-versions/get")
    assert len(gets) <= 2 and all(r.status == 403 for r in gets)


def test_an_experiment_in_a_folder_the_app_may_not_write_is_a_403_naming_it(client, grants, standin_workspace):
    name = f"{THEIR_FOLDER}/grants-{time.time_ns()}"
    start = len(standin_workspace.requests)
    with pytest.raises(MlflowException) as refused:
        client.create_experiment(name)
    assert refused.value.error_code == "PERMISSION_DENIED"
    message = refused.value.message
    assert f"missing grant: CAN MANAGE on folder {THEIR_FOLDER}" in message, message
    assert "Config:" not in message and standin_workspace.url not in message  # databricks-sdk's dump of its settings
    creates = calls_since(standin_workspace, start, "POST", "/api/2.0/mlflow/experiments/create")
    assert [r.status for r in creates] == [403]


def test_health_has_no_warnings_with_every_grant(databricks_app):
    body = databricks_app.health().json()
    assert body["status"] == "ok"
    assert "warnings" not in body


@pytest.fixture(scope="module")
def app_missing_grants(tmp_path_factory, standin_workspace):
    """An app of its own, started while the stand-in enforces grants the app lacks: WRITE VOLUME,
    CREATE MODEL, and CAN MANAGE on its experiment folder (another user's home folder)."""
    with refusals_kept_here(standin_workspace), standin_workspace.grants.restored_after() as held:
        principal = standin_workspace.client_id
        grant_everything_the_app_needs(held.enforce(), principal)
        held.revoke(principal, "WRITE VOLUME", "volume", VOLUME).revoke(principal, "CREATE MODEL", "schema", "main.default")
        env = platform_env(standin_workspace, MLFLOW_APP_EXPERIMENT_FOLDER=THEIR_FOLDER)
        with running_databricks_app(tmp_path_factory.mktemp("grants-app"), env) as app:
            yield app


def test_health_warns_of_missing_grants_and_stays_200(app_missing_grants, standin_workspace):
    app = app_missing_grants
    deadline = time.monotonic() + 60
    while True:
        answer = app.health()
        warnings = answer.json().get("warnings", [])
        if len(warnings) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert any(f"missing grant: WRITE VOLUME on {VOLUME}" in w for w in warnings), warnings
    assert any("missing grant: CREATE MODEL on main.default" in w for w in warnings), warnings
    assert any(f"missing grant: CAN MANAGE on folder {THEIR_FOLDER}" in w for w in warnings), warnings
    assert len(warnings) == 3, warnings
    assert not any("USE CATALOG" in w or "USE SCHEMA" in w for w in warnings), warnings
    # Each warning is logged once, and nothing secret is in /health.
    log = app.log_text()
    assert log.count(f"missing grant: WRITE VOLUME on {VOLUME}") == 1, log[-3000:]
    assert standin_workspace.client_secret not in answer.text
    assert not any(token in answer.text for token in standin_workspace.issued_tokens)
    assert os.environ.get("DATABRICKS_CLIENT_SECRET", "§") not in answer.text
