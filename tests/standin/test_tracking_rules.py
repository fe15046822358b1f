"""The stand-in workspace holds MLflow clients to a workspace's rules on experiments: absolute names,
no experiment 0, an existing parent folder the caller may create in (tracking_rules.py), and the
folder tree behind them (workspace_folders.py).

Driven through HTTP (and the real mlflow client and databricks-sdk) only, so that the same file run
against a stand-in without these rules shows each of them failing there.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.standin.workspace import StandinWorkspace

PAT = "dapiSTANDINrulesPAT0123456789ab"
PAT_USER_HOME = "/Users/pat-user@example.com"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    running = StandinWorkspace(tmp_path_factory.mktemp("standin-rules"), pat=PAT).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def oauth_token(workspace) -> str:
    """A token of the app's service principal (OAuth machine-to-machine, as on Databricks Apps)."""
    answer = httpx.post(
        f"{workspace.url}/oidc/v1/token",
        data={"grant_type": "client_credentials", "scope": "all-apis"},
        auth=(workspace.client_id, workspace.client_secret),
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


@pytest.fixture
def api(workspace, oauth_token):
    """Calls as the service principal."""
    with httpx.Client(base_url=workspace.url, headers={"Authorization": f"Bearer {oauth_token}"}, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture
def as_user(workspace):
    """Calls as another principal: the user the personal access token belongs to."""
    with httpx.Client(base_url=workspace.url, headers={"Authorization": f"Bearer {PAT}"}, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture
def enforced(workspace):
    """Grants enforced for one test; what it granted is undone after it (the stand-in is shared)."""
    with workspace.grants.restored_after() as grants:
        yield grants.enforce()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def refusal(response: httpx.Response, status: int, error_code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == error_code, body
    return body["message"]


def create_experiment(client: httpx.Client, name: str) -> httpx.Response:
    return client.post("/api/2.0/mlflow/experiments/create", json={"name": name})


# -- experiment names are absolute workspace paths ------------------------------------------------


def test_a_relative_name_is_refused_on_create(api):
    message = refusal(create_experiment(api, unique("churn")), 400, "INVALID_PARAMETER_VALUE")
    assert "must be an absolute path within the Databricks workspace" in message


def test_a_relative_name_is_refused_on_rename(api):
    created = create_experiment(api, unique("/Shared/to-rename"))
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    renamed = api.post("/api/2.0/mlflow/experiments/update", json={"experiment_id": experiment_id, "new_name": "renamed"})
    assert "must be an absolute path" in refusal(renamed, 400, "INVALID_PARAMETER_VALUE")
    # A rename to a full path is fine, and the tree follows it.
    new_name = unique("/Shared/renamed")
    assert api.post("/api/2.0/mlflow/experiments/update", json={"experiment_id": experiment_id, "new_name": new_name}).status_code == 200
    names = [o["path"] for o in api.get("/api/2.0/workspace/list", params={"path": "/Shared"}).json().get("objects", [])]
    assert new_name in names


def test_a_relative_name_finds_nothing(api):
    # The open-source server behind the stand-in has an experiment named "Default"; a workspace does not.
    refusal(api.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "Default"}), 404, "RESOURCE_DOES_NOT_EXIST")


# -- no experiment 0 ---------------------------------------------------------------------------------


def test_there_is_no_experiment_zero(api):
    refusal(api.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"}), 404, "RESOURCE_DOES_NOT_EXIST")
    run = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0", "start_time": 1})
    assert "does not exist" in refusal(run, 400, "INVALID_PARAMETER_VALUE")


def test_searches_do_not_show_experiment_zero(api):
    experiments = api.post("/api/2.0/mlflow/experiments/search", json={"max_results": 1000}).json().get("experiments", [])
    assert "0" not in [e["experiment_id"] for e in experiments]
    assert "Default" not in [e["name"] for e in experiments]
    runs = api.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"]})
    assert runs.status_code == 200 and runs.json().get("runs", []) == [], runs.text


# -- the parent folder -------------------------------------------------------------------------------


def test_the_parent_folder_must_exist(api):
    folder = unique("/Shared/team")
    message = refusal(create_experiment(api, f"{folder}/churn"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert message == f"Parent directory {folder} does not exist."
    assert api.post("/api/2.0/workspace/mkdirs", json={"path": folder}).status_code == 200
    created = create_experiment(api, f"{folder}/churn")
    assert created.status_code == 200, created.text
    listed = api.get("/api/2.0/workspace/list", params={"path": folder}).json()["objects"]
    assert [(o["path"], o["object_type"]) for o in listed] == [(f"{folder}/churn", "MLFLOW_EXPERIMENT")]
    # An experiment is not a folder: nothing goes inside it.
    refusal(create_experiment(api, f"{folder}/churn/inner"), 400, "INVALID_PARAMETER_VALUE")


def test_a_name_that_is_a_folder_is_taken(api):
    folder = unique("/Shared/a-folder")
    assert api.post("/api/2.0/workspace/mkdirs", json={"path": folder}).status_code == 200
    refusal(create_experiment(api, folder), 400, "RESOURCE_ALREADY_EXISTS")


def test_the_users_folder_is_protected(api):
    refusal(api.post("/api/2.0/workspace/mkdirs", json={"path": "/Users/someone-else@example.com"}), 403, "DIRECTORY_PROTECTED")
    refusal(create_experiment(api, "/Users/someone-else@example.com/churn"), 404, "RESOURCE_DOES_NOT_EXIST")


# -- the caller's permission on the folder --------------------------------------------------------------


def test_the_caller_needs_a_write_level_on_the_folder(workspace, api, as_user, enforced):
    # A folder of another user's, where the app's principal may read but not create.
    folder = unique(f"{PAT_USER_HOME}/private")
    assert as_user.post("/api/2.0/workspace/mkdirs", json={"path": folder}).status_code == 200
    enforced.grant(workspace.client_id, "CAN_READ", "folder", folder)
    assert api.get("/api/2.0/workspace/get-status", params={"path": folder}).status_code == 200
    message = refusal(create_experiment(api, f"{folder}/churn"), 403, "PERMISSION_DENIED")
    assert folder in message and "CAN_MANAGE" in message
    refusal(api.post("/api/2.0/workspace/mkdirs", json={"path": f"{folder}/sub"}), 403, "PERMISSION_DENIED")
    # Its owner may; and so may the principal once granted CAN MANAGE.
    assert create_experiment(as_user, f"{folder}/mine").status_code == 200
    enforced.grant(workspace.client_id, "CAN_MANAGE", "folder", folder)
    assert create_experiment(api, f"{folder}/churn").status_code == 200


def test_without_a_grant_a_folder_cannot_be_seen(workspace, api, as_user, enforced):
    folder = unique(f"{PAT_USER_HOME}/hidden")
    assert as_user.post("/api/2.0/workspace/mkdirs", json={"path": folder}).status_code == 200
    refusal(api.get("/api/2.0/workspace/get-status", params={"path": folder}), 403, "PERMISSION_DENIED")
    # /Shared is everyone's: all users manage what is in it, grants or not.
    assert api.post("/api/2.0/workspace/mkdirs", json={"path": unique("/Shared/open")}).status_code == 200


# -- the folder tree as databricks-sdk and the mlflow client see it ---------------------------------------------------


def test_the_workspace_api_as_databricks_sdk_calls_it(workspace):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.workspace import ObjectType

    sdk = WorkspaceClient(host=workspace.url, token=PAT)
    folder = unique("/Shared/sdk") + "/nested"
    sdk.workspace.mkdirs(folder)
    sdk.workspace.mkdirs(folder)  # again: nothing to do, no error
    status = sdk.workspace.get_status(folder)
    assert status.object_type == ObjectType.DIRECTORY and status.path == folder and status.object_id
    parent = folder.rsplit("/", 1)[0]
    assert [o.path for o in sdk.workspace.list(parent)] == [folder]
    assert sorted(o.path for o in sdk.workspace.list("/") if o.object_type == ObjectType.DIRECTORY) == ["/Shared", "/Users"]
    with pytest.raises(NotFound, match=r"Path \(/Shared/no-such-thing\) doesn't exist"):
        sdk.workspace.get_status("/Shared/no-such-thing")
    with pytest.raises(Exception, match="is not empty"):
        sdk.workspace.delete(parent)
    sdk.workspace.delete(parent, recursive=True)
    with pytest.raises(NotFound):
        sdk.workspace.get_status(folder)


def test_the_mlflow_client_meets_the_rules(workspace, monkeypatch):
    """What a user's script does on day one, with the workspace as tracking URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for name in [n for n in __import__("os").environ if n.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = mlflow.MlflowClient(tracking_uri="databricks")
    with pytest.raises(MlflowException, match="must be an absolute path"):
        client.create_experiment(unique("churn"))
    assert client.get_experiment_by_name("Default") is None
    with pytest.raises(MlflowException, match="does not exist"):
        client.create_run("0")
    name = unique(f"{PAT_USER_HOME}/churn")
    experiment_id = client.create_experiment(name)
    assert client.get_experiment_by_name(name).experiment_id == experiment_id
