"""The Apps stand-in behaves as the platform is documented to, seen through databricks-sdk itself:
only states the SDK knows, in the order its waiters wait for, OAuth machine-to-machine besides a
personal access token, and the 10 MB file limit. Each rule here failed against the earlier stand-in."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, OperationFailed
from databricks.sdk.service.apps import App, AppDeployment, AppDeploymentMode, AppDeploymentState, ApplicationState, ComputeState
from databricks.sdk.service.workspace import ImportFormat

from tests.deploy.standin_apps import CLIENT_ID, TOKEN, WorkspaceObject

SOURCE = "/Workspace/Users/someone@example.com/app"
WAIT = timedelta(seconds=30)


@pytest.fixture
def client(standin) -> WorkspaceClient:
    return WorkspaceClient(host=standin.url, token=TOKEN)


def deploy_folder(client: WorkspaceClient, app_name: str, files: dict[str, bytes]):
    """Create the app, wait for its compute with the SDK's waiter, upload `files`, start a deployment."""
    created = client.apps.create(App(name=app_name))
    assert created.response.compute_status.state == ComputeState.STARTING
    seen_compute = [created.result(timeout=WAIT).compute_status.state]
    client.workspace.mkdirs(SOURCE)
    for name, content in files.items():
        client.workspace.upload(f"{SOURCE}/{name}", io.BytesIO(content), format=ImportFormat.AUTO, overwrite=True)
    return seen_compute, client.apps.deploy(app_name, AppDeployment(source_code_path=SOURCE, mode=AppDeploymentMode.SNAPSHOT))


def test_a_deployment_goes_through_states_the_sdk_knows_to_succeeded(client):
    seen_compute, started = deploy_folder(client, "states-app", {"app.yaml": b"command: []\n"})
    assert seen_compute == [ComputeState.ACTIVE]
    seen = [started.response.status.state]
    done = started.result(timeout=WAIT, callback=lambda d: seen.append(d.status.state))
    assert seen == [AppDeploymentState.IN_PROGRESS, AppDeploymentState.IN_PROGRESS]  # PENDING would read as None
    assert done.status.state == AppDeploymentState.SUCCEEDED
    app = client.apps.get("states-app")
    assert app.app_status.state == ApplicationState.RUNNING and app.active_deployment.deployment_id == done.deployment_id


def test_while_deploying_the_app_says_so(client):
    _, started = deploy_folder(client, "deploying-app", {"app.yaml": b"command: []\n"})
    assert client.apps.get("deploying-app").app_status.state == ApplicationState.DEPLOYING
    started.result(timeout=WAIT)


def test_a_failed_deployment_ends_the_sdks_waiter_with_the_message(client, standin):
    standin.state.deployment_endings["failing-app"] = ("FAILED", "Error installing packages.")
    _, started = deploy_folder(client, "failing-app", {"app.yaml": b"command: []\n"})
    with pytest.raises(OperationFailed, match="failed to reach SUCCEEDED, got AppDeploymentState.FAILED: Error installing packages."):
        started.result(timeout=WAIT)
    assert client.apps.get("failing-app").app_status.state == ApplicationState.UNAVAILABLE


def test_every_state_answered_is_one_the_sdk_knows(client, standin):
    standin.state.deployment_endings["failing-app"] = ("FAILED", "no")
    for name in ("known-app", "failing-app"):
        _, started = deploy_folder(client, name, {"app.yaml": b"command: []\n"})
        try:
            started.result(timeout=WAIT)
        except OperationFailed:
            pass
    bodies = [body for _, body in standin.state.answers]
    assert bodies
    for body in bodies:  # the SDK reads a state it does not know as None
        if "compute_status" in body:
            app = App.from_dict(body)
            assert app.compute_status.state is not None and app.app_status.state is not None, body
        else:
            assert AppDeployment.from_dict(body).status.state is not None, body


def test_oauth_machine_to_machine_signs_in_as_the_service_principal(oauth_standin):
    client = WorkspaceClient()  # DATABRICKS_HOST, DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET
    assert client.config.auth_type == "oauth-m2m"
    assert client.current_user.me().user_name == CLIENT_ID
    assert ("POST", "/oidc/v1/token") in oauth_standin.state.requests


def test_a_wrong_client_secret_gets_no_token(oauth_standin, monkeypatch):
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "not-the-secret")
    client = WorkspaceClient()
    with pytest.raises(ValueError, match="invalid_client"):
        client.current_user.me()
    assert not oauth_standin.oauth.tokens


def test_a_file_over_10_mb_is_refused_on_upload(client):
    client.workspace.mkdirs(SOURCE)
    client.workspace.upload(f"{SOURCE}/at-limit.bin", io.BytesIO(b"x" * 10_000_000), format=ImportFormat.AUTO)
    with pytest.raises(BadRequest, match="10 MB"):
        client.workspace.upload(f"{SOURCE}/over.bin", io.BytesIO(b"x" * 10_000_001), format=ImportFormat.AUTO)


def test_a_deployment_of_a_folder_with_a_file_over_10_mb_fails(client, standin):
    _, started = deploy_folder(client, "big-file-app", {"app.yaml": b"command: []\n"})
    started.result(timeout=WAIT)
    standin.state.objects[f"{SOURCE}/big.bin"] = WorkspaceObject("FILE", b"x" * 10_000_001)  # put there by other means than import
    again = client.apps.deploy("big-file-app", AppDeployment(source_code_path=SOURCE, mode=AppDeploymentMode.SNAPSHOT))
    with pytest.raises(OperationFailed, match="big.bin exceeds the 10 MB limit"):
        again.result(timeout=WAIT)
