"""The stand-in's grants: once a test enforces them, a principal may do only what it was granted.

Plain HTTP against a stand-in without MLflow, as the app's service principal (an OAuth token) and
as a second user (a personal access token), and databricks-sdk for the effective-permissions API.
"""

from __future__ import annotations

import httpx
import pytest

from tests.standin.workspace import StandinWorkspace

UC = "/api/2.0/mlflow/unity-catalog"
FILES = "/api/2.0/fs/files"
DIRECTORIES = "/api/2.0/fs/directories"
PAT = "dapiSTANDINsecondUSER0000000001"
OTHER_USER = "pat-user@example.com"  # the principal the stand-in records for its PAT


@pytest.fixture
def workspace(tmp_path):
    with StandinWorkspace(tmp_path, with_mlflow=False, pat=PAT) as running:
        yield running


def as_principal(workspace: StandinWorkspace, bearer: str) -> httpx.Client:
    return httpx.Client(base_url=workspace.url, headers={"Authorization": f"Bearer {bearer}"}, trust_env=False, timeout=30)


@pytest.fixture
def app(workspace) -> httpx.Client:
    """The app's service principal (OAuth machine-to-machine)."""
    token = httpx.post(f"{workspace.url}/oidc/v1/token", data={"grant_type": "client_credentials"}, auth=(workspace.client_id, workspace.client_secret), trust_env=False)
    with as_principal(workspace, token.json()["access_token"]) as client:
        yield client


@pytest.fixture
def other(workspace) -> httpx.Client:
    """Another user of the workspace, who owns what it creates."""
    with as_principal(workspace, PAT) as client:
        yield client


def refusal(answer: httpx.Response) -> tuple[int, str, str]:
    body = answer.json()
    return answer.status_code, body["error_code"], body["message"]


def denied(message: str) -> tuple[int, str, str]:
    return 403, "PERMISSION_DENIED", message


def test_creating_a_model_takes_use_catalog_use_schema_and_create_model(workspace, app):
    grants = workspace.grants.enforce()
    me = workspace.client_id
    create = lambda: app.post(f"{UC}/registered-models/create", json={"name": "main.default.iris"})  # noqa: E731
    assert refusal(create()) == denied("User does not have USE CATALOG on Catalog 'main'.")
    grants.grant(me, "USE CATALOG", "catalog", "main")
    assert refusal(create()) == denied("User does not have USE SCHEMA on Schema 'main.default'.")
    grants.grant(me, "USE SCHEMA", "schema", "main.default")
    assert refusal(create()) == denied("User does not have CREATE MODEL on Schema 'main.default'.")
    assert workspace.unity_catalog.models == {}
    grants.grant(me, "CREATE MODEL", "schema", "main.default")
    assert create().status_code == 200
    # The creator owns the model: versions, aliases, tags and reads need no further grant.
    assert grants.owner("registered_model", "main.default.iris") == me
    assert app.post(f"{UC}/model-versions/create", json={"name": "main.default.iris", "source": "s3://x"}).status_code == 200
    assert app.put(f"{FILES}/Models/main/default/iris/1/MLmodel", content=b"flavors: {}").status_code == 204
    assert app.post(f"{UC}/registered-models/alias", json={"name": "main.default.iris", "alias": "Champion", "version": "1"}).status_code == 200
    assert app.get(f"{UC}/registered-models/alias", params={"name": "main.default.iris", "alias": "Champion"}).status_code == 200
    # USE SCHEMA is still needed on top of ownership.
    grants.revoke(me, "USE SCHEMA", "schema", "main.default")
    assert refusal(app.get(f"{UC}/registered-models/get", params={"name": "main.default.iris"})) == denied("User does not have USE SCHEMA on Schema 'main.default'.")


def test_a_model_another_user_owns_can_be_loaded_with_execute_but_not_changed(workspace, app, other):
    grants = workspace.grants.enforce()
    me = workspace.client_id
    grants.grant(OTHER_USER, "ALL PRIVILEGES", "catalog", "main")
    assert other.post(f"{UC}/registered-models/create", json={"name": "main.default.theirs"}).status_code == 200
    other.post(f"{UC}/model-versions/create", json={"name": "main.default.theirs", "source": "s3://x"})
    assert other.put(f"{FILES}/Models/main/default/theirs/1/MLmodel", content=b"theirs").status_code == 204
    other.post(f"{UC}/model-versions/finalize", json={"name": "main.default.theirs", "version": "1"})
    grants.grant(me, "USE CATALOG", "catalog", "main").grant(me, "USE SCHEMA", "schema", "main.default")

    get = lambda: app.get(f"{UC}/model-versions/get", params={"name": "main.default.theirs", "version": "1"})  # noqa: E731
    download = lambda: app.get(f"{FILES}/Models/main/default/theirs/1/MLmodel")  # noqa: E731
    assert refusal(get()) == denied("User does not have EXECUTE on Function 'main.default.theirs'.")
    assert refusal(download()) == denied("User does not have EXECUTE on Function 'main.default.theirs'.")
    grants.grant(me, "EXECUTE", "registered_model", "main.default.theirs")
    assert get().status_code == 200 and download().content == b"theirs"

    not_owner = denied("User is not an owner of Function 'main.default.theirs'.")
    name = {"name": "main.default.theirs"}
    assert refusal(app.post(f"{UC}/registered-models/alias", json={**name, "alias": "Champion", "version": "1"})) == not_owner
    assert refusal(app.post(f"{UC}/model-versions/create", json={**name, "source": "s3://y"})) == not_owner
    assert refusal(app.post(f"{UC}/registered-models/set-tag", json={**name, "key": "k", "value": "v"})) == not_owner
    assert refusal(app.request("DELETE", f"{UC}/registered-models/delete", json=name)) == not_owner
    assert refusal(app.post(f"{UC}/model-versions/generate-temporary-credentials", json={**name, "version": "1", "operation": "MODEL_VERSION_OPERATION_READ_WRITE"})) == not_owner
    model = workspace.unity_catalog.models["main.default.theirs"]
    assert (list(model.versions), model.aliases, model.tags) == ([1], {}, {})


def test_search_lists_only_the_models_the_caller_may_read(workspace, app, other):
    grants = workspace.grants.enforce()
    me = workspace.client_id
    grants.grant(OTHER_USER, "ALL PRIVILEGES", "catalog", "main").grant(OTHER_USER, "ALL PRIVILEGES", "catalog", "prod")
    for name in ("main.default.seen", "main.default.hidden", "prod.ml.elsewhere"):
        assert other.post(f"{UC}/registered-models/create", json={"name": name}).status_code == 200
        other.post(f"{UC}/model-versions/create", json={"name": name, "source": "s3://x", "run_id": "run-1"})
    grants.grant(me, "USE CATALOG", "catalog", "main").grant(me, "USE SCHEMA", "schema", "main.default")
    grants.grant(me, "EXECUTE", "registered_model", "main.default.seen")
    grants.grant(me, "EXECUTE", "schema", "prod.ml")  # no USE CATALOG on prod: still not visible

    listed = app.get(f"{UC}/registered-models/search").json()
    assert [m["name"] for m in listed["registered_models"]] == ["main.default.seen"]
    by_run = app.get(f"{UC}/model-versions/search", params={"filter": "run_id='run-1'"}).json()
    assert [v["name"] for v in by_run["model_versions"]] == ["main.default.seen"]
    everything = other.get(f"{UC}/registered-models/search").json()["registered_models"]
    assert len(everything) == 3


def test_volume_files_take_read_volume_to_read_and_write_volume_to_write(workspace, app):
    grants = workspace.grants.enforce()
    me = workspace.client_id
    volume = "/Volumes/main/default/mlflow"
    write = lambda: app.put(f"{FILES}{volume}/run/notes.txt", content=b"hello")  # noqa: E731
    reads = {
        "get": lambda: app.get(f"{FILES}{volume}/run/notes.txt"),
        "list": lambda: app.get(f"{DIRECTORIES}{volume}/run"),
        "download url": lambda: app.post("/api/2.0/fs/create-download-url", params={"path": f"{volume}/run/notes.txt"}),
    }
    writes = {
        "put": write,
        "mkdir": lambda: app.put(f"{DIRECTORIES}{volume}/run/sub"),
        "delete": lambda: app.delete(f"{FILES}{volume}/run/notes.txt"),
        "multipart": lambda: app.post(f"{FILES}{volume}/run/big.bin", params={"action": "initiate-upload"}),
    }
    assert refusal(write()) == denied("User does not have USE CATALOG on Catalog 'main'.")
    grants.grant(me, "USE CATALOG", "catalog", "main").grant(me, "USE SCHEMA", "schema", "main.default")
    for call in writes.values():
        assert refusal(call()) == denied("User does not have WRITE VOLUME on Volume 'main.default.mlflow'.")
    for call in reads.values():
        assert refusal(call()) == denied("User does not have READ VOLUME on Volume 'main.default.mlflow'.")
    assert not any(p.is_file() for p in workspace.files_root.rglob("*"))

    grants.grant(me, "WRITE VOLUME", "volume", "main.default.mlflow")
    assert write().status_code == 204
    assert refusal(reads["get"]()) == denied("User does not have READ VOLUME on Volume 'main.default.mlflow'.")
    grants.grant(me, "READ VOLUME", "schema", "main.default")  # inherited from the schema
    assert reads["get"]().content == b"hello"
    assert [e["name"] for e in reads["list"]().json()["contents"]] == ["notes.txt"]
    assert app.head(f"{FILES}{volume}/run/notes.txt").status_code == 200
    # HEAD answers have no body: the refusal is its status alone.
    grants.revoke(me, "READ VOLUME", "schema", "main.default")
    assert app.head(f"{FILES}{volume}/run/notes.txt").status_code == 403


def test_effective_permissions_as_databricks_sdk_reads_them(workspace):
    from databricks.sdk import WorkspaceClient

    grants = workspace.grants
    me = workspace.client_id
    w = WorkspaceClient(host=workspace.url, client_id=me, client_secret=workspace.client_secret)
    # Open (not enforced): everything, as if granted on the metastore.
    (open_assignment,) = w.grants.get_effective("volume", "main.default.mlflow", principal=me).privilege_assignments
    assert [p.privilege.value for p in open_assignment.privileges] == ["ALL_PRIVILEGES"]

    grants.enforce().grant(me, "USE CATALOG", "catalog", "main").grant(me, "USE SCHEMA", "schema", "main.default")
    grants.grant(me, "WRITE VOLUME", "volume", "main.default.mlflow")
    (assignment,) = w.grants.get_effective("volume", "main.default.mlflow", principal=me).privilege_assignments
    found = {(p.privilege.value, p.inherited_from_type.value if p.inherited_from_type else None, p.inherited_from_name) for p in assignment.privileges}
    assert assignment.principal == me
    assert found == {("WRITE_VOLUME", None, None), ("USE_SCHEMA", "SCHEMA", "main.default"), ("USE_CATALOG", "CATALOG", "main")}
    (schema_assignment,) = w.grants.get_effective("schema", "main.other", principal=me).privilege_assignments
    assert [p.privilege.value for p in schema_assignment.privileges] == ["USE_CATALOG"]
    assert not w.grants.get_effective("catalog", "prod", principal=me).privilege_assignments
    calls = [r for r in workspace.requests if r.path.startswith("/api/2.1/unity-catalog/effective-permissions/")]
    assert calls and all(r.credential == "oauth" and r.status == 200 for r in calls)


def test_effective_permissions_of_another_principal_are_its_owners_to_see(workspace, app):
    workspace.grants.enforce()
    asked = app.get("/api/2.1/unity-catalog/effective-permissions/schema/main.default", params={"principal": OTHER_USER})
    assert refusal(asked) == denied("User does not have MANAGE on Schema 'main.default'.")
    assert app.get("/api/2.1/unity-catalog/effective-permissions/schema/main.default").json() == {"privilege_assignments": []}


def test_an_open_stand_in_lets_every_valid_token_do_everything(workspace, app):
    # What every test not about permissions relies on: grants are off until a test enforces them.
    assert app.post(f"{UC}/registered-models/create", json={"name": "main.default.open"}).status_code == 200
    assert app.put(f"{FILES}/Volumes/main/default/v/f.txt", content=b"x").status_code == 204
    assert app.get(f"{FILES}/Volumes/main/default/v/f.txt").content == b"x"
