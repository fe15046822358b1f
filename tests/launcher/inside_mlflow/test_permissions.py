"""Workspace refusals inside the MLflow child become 403s naming the missing grant
(launcher/inside_mlflow/workspace_plugin/permissions.py). End to end: tests/e2e/test_databricks_grants.py."""

from __future__ import annotations

import pytest
from databricks.sdk.errors import PermissionDenied
from mlflow.exceptions import MlflowException, RestException

from launcher.inside_mlflow.workspace_plugin.permissions import GrantNamingRepository, missing_grant, name_refusals_of, named_refusals, refusal_message

SDK_DUMP = " Config: host=https://w.example, client_id=4d1b, client_secret=***. Env: DATABRICKS_HOST, DATABRICKS_CLIENT_ID"


@pytest.mark.parametrize(
    ("text", "grant"),
    [
        ("User does not have USE SCHEMA on Schema 'main.default'.", "USE SCHEMA on main.default"),
        ("PERMISSION_DENIED: User does not have WRITE_VOLUME on Volume 'main.default.mlflow'.", "WRITE VOLUME on main.default.mlflow"),
        ("User does not have EXECUTE on Routine or Model 'main.default.iris'.", "EXECUTE on main.default.iris"),
        ("User is not an owner of Function 'main.default.iris'.", "ownership of main.default.iris"),
        ("User 4d1b does not have CAN_MANAGE permission on directory /Shared/app.", "CAN MANAGE on folder /Shared/app"),
        ("Invalid access token.", None),
    ],
)
def test_the_grant_is_read_from_the_workspaces_text(text, grant):
    assert missing_grant(text) == grant


def test_the_message_names_the_grant_and_drops_the_sdks_config_dump():
    message = refusal_message("PERMISSION_DENIED: User does not have CREATE MODEL on Schema 'main.default'." + SDK_DUMP)
    assert message.startswith("missing grant: CREATE MODEL on main.default: the workspace refused the app's service principal (User does not have CREATE MODEL on Schema 'main.default'); ")
    assert "Config" not in message and "client_id" not in message and "w.example" not in message
    # A text that names nothing: the grant the call needs.
    assert refusal_message("Forbidden", "READ VOLUME on c.s.v").startswith("missing grant: READ VOLUME on c.s.v: ")


def refused(exc: Exception, needed: str | None = None) -> MlflowException:
    with pytest.raises(MlflowException) as raised, named_refusals(needed):
        raise exc
    return raised.value


def test_sdk_and_rest_refusals_become_permission_denied_and_the_apps_own_stay():
    sdk = refused(PermissionDenied("User does not have WRITE VOLUME on Volume 'c.s.v'." + SDK_DUMP))
    assert sdk.error_code == "PERMISSION_DENIED" and sdk.get_http_status_code() == 403
    assert sdk.message.startswith("missing grant: WRITE VOLUME on c.s.v: ")
    rest = refused(RestException({"error_code": "PERMISSION_DENIED", "message": "Forbidden."}), "EXECUTE on c.s.m")
    assert rest.message.startswith("missing grant: EXECUTE on c.s.m: ")
    own = MlflowException("Unity Catalog model files are read only through the app.", error_code="PERMISSION_DENIED")
    assert refused(own, "EXECUTE on c.s.m") is own
    other = MlflowException("no such run", error_code="RESOURCE_DOES_NOT_EXIST")
    assert refused(other, "READ VOLUME on c.s.v") is other


class FakeStore:
    def __init__(self):
        self.calls = 0

    def create_registered_model(self, name):
        self.calls += 1
        raise RestException({"error_code": "PERMISSION_DENIED", "message": f"User does not have CREATE MODEL on Schema '{name.rsplit('.', 1)[0]}'."})

    @staticmethod
    def helper():
        return "static"


def test_a_store_instance_names_refusals_and_only_that_instance():
    store, other = FakeStore(), FakeStore()
    name_refusals_of(store)
    with pytest.raises(MlflowException, match=r"^missing grant: CREATE MODEL on main\.default: "):
        store.create_registered_model("main.default.iris")
    assert isinstance(store, FakeStore) and store.helper() == "static" and store.calls == 1
    with pytest.raises(RestException, match="^PERMISSION_DENIED: User does not have"):
        other.create_registered_model("main.default.iris")


class FakeRouter:
    def log_artifact(self, local_file, artifact_path=None):
        raise PermissionDenied("Forbidden")

    def list_artifacts(self, path=None):
        raise PermissionDenied("Forbidden")


def test_the_repository_names_the_grant_each_call_needs():
    repository = GrantNamingRepository(FakeRouter(), "dbfs:/Volumes/main/default/mlflow/mlflow")
    with pytest.raises(MlflowException, match=r"^missing grant: WRITE VOLUME on main\.default\.mlflow: "):
        repository.log_artifact("/tmp/x", "experiments/1")
    with pytest.raises(MlflowException, match=r"^missing grant: READ VOLUME on main\.default\.mlflow: "):
        repository.list_artifacts("experiments/1")
    with pytest.raises(MlflowException, match=r"^missing grant: EXECUTE on main\.default\.iris: "):
        repository.list_artifacts("_unity_catalog/models/main.default.iris/1")


def test_a_permission_denied_anywhere_under_flask_is_a_403_in_mlflows_shape():
    from flask import Flask

    from launcher.inside_mlflow.workspace_plugin.permissions import install_refusal_handler

    app = Flask("refusals")

    @app.route("/api/2.0/mlflow/anything")
    def anything():
        raise PermissionDenied("User does not have READ VOLUME on Volume 'c.s.v'." + SDK_DUMP)

    install_refusal_handler(app)
    answer = app.test_client().get("/api/2.0/mlflow/anything")
    assert answer.status_code == 403 and answer.mimetype == "application/json"
    assert answer.json["error_code"] == "PERMISSION_DENIED"
    assert answer.json["message"].startswith("missing grant: READ VOLUME on c.s.v: ") and "Config" not in answer.json["message"]
