"""The start-up check of the app's grants (launcher/databricks/grants_check.py): which grants the
settings need, and what the stand-in workspace (its effective-permissions API, through the real
databricks-sdk) says is missing."""

from __future__ import annotations

import pytest

from launcher.databricks.grants_check import NeededGrant, check_grants, needed_grants
from launcher.settings import Settings

ON_APPS = {"backend_store_uri": "databricks", "registry_store_uri": "databricks-uc", "artifacts_destination": "/Volumes/main/default/mlflow"}


def test_the_grants_needed_are_the_volumes_and_create_model_on_its_schema():
    assert [(g.privilege, g.securable_type, g.full_name) for g in needed_grants(Settings(**ON_APPS))] == [
        ("USE CATALOG", "catalog", "main"),
        ("USE SCHEMA", "schema", "main.default"),
        ("READ VOLUME", "volume", "main.default.mlflow"),
        ("WRITE VOLUME", "volume", "main.default.mlflow"),
        ("CREATE MODEL", "schema", "main.default"),
    ]
    # A volume's name and a folder below its root name the same volume.
    for destination in ("main.default.mlflow", "/Volumes/main/default/mlflow/runs"):
        assert {g.full_name for g in needed_grants(Settings(**{**ON_APPS, "artifacts_destination": destination}))} == {"main", "main.default", "main.default.mlflow"}
    # Not a Unity Catalog registry: no CREATE MODEL. No volume: nothing the check can speak for.
    assert "CREATE MODEL" not in [g.privilege for g in needed_grants(Settings(**{**ON_APPS, "registry_store_uri": "databricks"}))]
    assert needed_grants(Settings(**{**ON_APPS, "artifacts_destination": None})) == []
    assert needed_grants(Settings(**{**ON_APPS, "artifacts_destination": "s3://bucket/mlflow"})) == []


def test_a_warning_says_what_will_be_refused():
    grant = NeededGrant("WRITE VOLUME", "volume", "main.default.mlflow", "artifact uploads")
    assert grant.warning() == "missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)"


def test_the_check_against_the_workspace_lists_what_is_missing(signed_in):
    workspace = signed_in
    me = workspace.client_id
    with workspace.grants.restored_after() as grants:
        assert check_grants(Settings(**ON_APPS)) == []  # open: every privilege
        grants.enforce().grant(me, "USE CATALOG", "catalog", "main").grant(me, "READ VOLUME", "schema", "main.default")
        assert check_grants(Settings(**ON_APPS)) == [
            "missing grant: USE SCHEMA on main.default (artifact uploads, downloads and model registration will be refused)",
            "missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)",
            "missing grant: CREATE MODEL on main.default (registering models in main.default will be refused)",
        ]
        grants.grant(me, "ALL PRIVILEGES", "schema", "main.default")
        assert check_grants(Settings(**ON_APPS)) == []
    asked = [r.path for r in workspace.requests if r.path.startswith("/api/2.1/unity-catalog/effective-permissions/")]
    # One question per securable, not per grant.
    assert sorted(set(asked)) == sorted(asked[:3]) and len(asked) == 9


@pytest.mark.parametrize("fault", ["unreachable", "slow"])
def test_a_check_that_cannot_run_is_one_warning_not_a_failure(signed_in, env, fault):
    workspace = signed_in
    if fault == "unreachable":
        env(DATABRICKS_HOST="http://127.0.0.1:9")
        expected = "could not check the app's grants"  # refused at once, or retried past the deadline
    else:
        workspace.faults.token_delay = 3.0
        expected = "could not check the app's grants: the workspace did not answer within 1 s"
    try:
        warnings = check_grants(Settings(**ON_APPS), timeout=1.0)
    finally:
        workspace.faults.token_delay = 0.0
    assert len(warnings) == 1 and warnings[0].startswith(expected), warnings
    assert workspace.client_secret not in warnings[0]


def test_the_experiment_folder_must_take_new_items(signed_in):
    workspace = signed_in
    me = workspace.client_id
    shared = {**ON_APPS, "artifacts_destination": None, "experiment_folder": "/Shared/grants-check"}
    theirs = {**shared, "experiment_folder": "/Users/pat-user@example.com"}  # another user's home folder
    with workspace.grants.restored_after() as grants:
        grants.enforce()
        workspace.folders.mkdirs("/Shared/grants-check", me)
        assert check_grants(Settings(**shared)) == []
        assert check_grants(Settings(**theirs)) == ["missing grant: CAN MANAGE on folder /Users/pat-user@example.com (creating experiments named without a folder will be refused)"]
    # The probe made in the folder is gone again; none was made where it was refused.
    assert not [path for path in workspace.folders.objects if path.endswith("/.mlflow-app-write-check")]
    assert [r.status for r in workspace.requests if r.path == "/api/2.0/workspace/mkdirs"] == [200, 403]
    assert [r.status for r in workspace.requests if r.path == "/api/2.0/workspace/delete"] == [200]
