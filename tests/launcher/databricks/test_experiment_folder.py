"""The experiment folder at start (launcher/databricks/experiment_folder.py): made when missing, with the
app's credentials, against the stand-in's folder tree; a refusal is one line and never stops the app."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from launcher.databricks.child_environment import child_experiment_folder, workspace_environment
from launcher.databricks.experiment_folder import ensure_folder, prepare_experiment_folder
from launcher.inside_mlflow.workspace_plugin.experiments import EXPERIMENT_FOLDER_ENV
from launcher.settings import Settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def enforced(workspace):
    """Grants enforced for one test; what it granted is undone after it (the stand-in is shared)."""
    with workspace.grants.restored_after() as grants:
        yield grants.enforce()


def test_a_missing_folder_is_made_with_its_parents(workspace, signed_in):
    folder = unique("/Shared/apps") + "/mlflow-e2e"
    outcome = ensure_folder(folder)
    assert outcome.ready and "created" in outcome.message
    assert workspace.folders.is_folder(folder)
    made_by = [r for r in workspace.requests if r.path == "/api/2.0/workspace/mkdirs"]
    assert [r.credential for r in made_by] == ["oauth"]  # the app's own credentials


def test_an_existing_folder_is_left_as_it_is(workspace, signed_in):
    folder = unique("/Shared/existing")
    workspace.folders.mkdirs(folder, "someone")
    workspace.requests.clear()
    outcome = ensure_folder(folder)
    assert outcome.ready and "created" not in outcome.message
    assert not [r for r in workspace.requests if r.path == "/api/2.0/workspace/mkdirs"]


def test_a_folder_the_principal_may_not_create_is_one_line_naming_the_folder_and_the_permission(workspace, signed_in, enforced):
    other_home = workspace.folders.add_home(unique("someone") + "@example.com")
    folder = f"{other_home}/mlflow"
    outcome = ensure_folder(folder, principal="sp-123")
    assert not outcome.ready and "\n" not in outcome.message
    assert outcome.message.startswith(f"experiment folder {folder}: sp-123 may not create it")
    assert f"CAN MANAGE on {other_home}" in outcome.message
    assert not workspace.folders.get(folder)


def test_under_users_nobody_makes_a_folder(workspace, signed_in):
    outcome = ensure_folder(f"/Users/{unique('nobody')}/mlflow")
    assert not outcome.ready and "may not create it" in outcome.message and "protected" in outcome.message


def test_an_unreachable_workspace_is_a_line_within_the_deadline(env):
    env(DATABRICKS_HOST="http://127.0.0.1:9", DATABRICKS_TOKEN="dapiNOTHINGhere0123456789")
    started = time.monotonic()
    outcome = ensure_folder("/Shared/x", timeout=3)
    assert not outcome.ready and outcome.message.startswith("experiment folder /Shared/x:")
    assert time.monotonic() - started < 6
    assert "dapiNOTHING" not in outcome.message


def test_start_up_logs_the_folder_or_its_absence(workspace, signed_in, caplog):
    caplog.set_level(logging.INFO, logger="mlflow_app.launcher")
    folder = unique("/Shared/app")
    assert prepare_experiment_folder(Settings(backend_store_uri="databricks", experiment_folder=folder)).ready
    assert prepare_experiment_folder(Settings(backend_store_uri="databricks")) is None
    assert prepare_experiment_folder(Settings(registry_store_uri="databricks-uc", experiment_folder="/Shared/unused")) is None
    lines = [r.getMessage() for r in caplog.records]
    assert f"experiment folder {folder}: created; experiments named without a folder go there" in lines
    assert sum("no --experiment-folder" in line for line in lines) == 1  # only for the workspace tracking store


def test_the_child_gets_the_folder_only_with_a_workspace_tracking_store():
    assert child_experiment_folder(Settings(backend_store_uri="databricks", experiment_folder="/Shared/a")) == "/Shared/a"
    assert child_experiment_folder(Settings(backend_store_uri="databricks://profile", experiment_folder="/Shared/a")) == "/Shared/a"
    assert child_experiment_folder(Settings(registry_store_uri="databricks-uc", experiment_folder="/Shared/a")) is None
    env = {"DATABRICKS_HOST": "https://x", EXPERIMENT_FOLDER_ENV: "/Shared/inherited"}
    assert workspace_environment(env, None, None, "/Shared/a")[EXPERIMENT_FOLDER_ENV] == "/Shared/a"
    assert workspace_environment(env, None, None, None)[EXPERIMENT_FOLDER_ENV] == ""  # an inherited value does not reach the child
