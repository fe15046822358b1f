"""Experiment names through the app in Databricks mode, against a stand-in workspace that holds to a
workspace's rules (absolute paths, no experiment 0, a folder the caller may create in:
tests/standin/tracking_rules.py): what a user's first script and the UI do with plain names must work,
landing under the app's experiment folder (`/Shared/<app name>` on Databricks Apps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.app_process import AppProcess
from tests.e2e.conftest import DATABRICKS_APP_NAME, platform_env

pytestmark = pytest.mark.e2e

FOLDER = f"/Shared/{DATABRICKS_APP_NAME}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client_script(app_url: str, script: str) -> dict:
    """Run `script` in a fresh Python with the real mlflow client pointed at the app, and nothing else
    set: no experiment, no Databricks credentials. It prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=app_url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_app_made_its_experiment_folder_at_start(databricks_app, standin_workspace):
    assert standin_workspace.folders.is_folder(FOLDER)
    made = [r for r in standin_workspace.requests if r.path == "/api/2.0/workspace/mkdirs"]
    assert made and made[0].credential == "oauth"  # with the app's own credentials
    messages = [json.loads(line)["message"] for line in databricks_app.log_text().splitlines() if line.strip()]
    assert f"experiment folder {FOLDER}: created; experiments named without a folder go there" in messages


def test_a_first_script_with_nothing_set_and_a_plain_name(databricks_app, client, backing, standin_workspace):
    name = unique("churn")
    found = client_script(
        databricks_app.url,
        f"""
import json, mlflow
with mlflow.start_run() as default_run:  # no experiment set: MLflow's default, 0
    mlflow.log_param("lr", "0.1")
experiment = mlflow.set_experiment({name!r})
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.5)
print(json.dumps({{"default_run": default_run.info.run_id, "default_experiment": default_run.info.experiment_id,
                   "experiment": experiment.experiment_id, "experiment_name": experiment.name, "run": run.info.run_id}}))
""",
    )
    # The default experiment is the folder's, and experiment 0 through the app is that one.
    default = backing.get("experiments/get", experiment_id=found["default_experiment"])["experiment"]
    assert default["name"] == f"{FOLDER}/Default"
    assert client.get_experiment("0").experiment_id == found["default_experiment"]
    assert found["default_run"] in [r.info.run_id for r in client.search_runs(["0"])]
    assert client.get_run(found["default_run"]).data.params == {"lr": "0.1"}
    # A plain name lands in the folder, and either form finds it.
    assert found["experiment_name"] == f"{FOLDER}/{name}"
    assert client.get_experiment_by_name(name).experiment_id == found["experiment"]
    assert client.get_experiment_by_name(f"{FOLDER}/{name}").experiment_id == found["experiment"]
    landed = backing.get("experiments/get-by-name", experiment_name=f"{FOLDER}/{name}")["experiment"]
    assert landed["experiment_id"] == found["experiment"]
    assert standin_workspace.folders.get(f"{FOLDER}/{name}").object_type == "MLFLOW_EXPERIMENT"
    # The workspace has no experiment 0, and the app shows none.
    assert "0" not in [e.experiment_id for e in client.search_experiments(max_results=1000)]


def test_the_uis_create_and_rename_with_plain_names(databricks_app, backing):
    name, new_name = unique("from-the-ui"), unique("renamed-in-the-ui")
    with httpx.Client(base_url=databricks_app.url, timeout=120) as ui:  # the UI's own relative calls
        created = ui.post("/ajax-api/2.0/mlflow/experiments/create", json={"name": name})
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]
        renamed = ui.post("/ajax-api/2.0/mlflow/experiments/update", json={"experiment_id": experiment_id, "new_name": new_name})
        assert renamed.status_code == 200, renamed.text
        shown = ui.get("/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id}).json()["experiment"]
    assert shown["name"] == f"{FOLDER}/{new_name}"
    assert backing.get("experiments/get", experiment_id=experiment_id)["experiment"]["name"] == f"{FOLDER}/{new_name}"


def test_a_full_path_elsewhere_is_kept_and_the_workspace_judges_it(client, backing):
    experiment_id = client.create_experiment(unique("/Users/e2e/kept"))
    assert backing.get("experiments/get", experiment_id=experiment_id)["experiment"]["name"].startswith("/Users/e2e/kept-")
    with pytest.raises(Exception) as refused:
        client.create_experiment(unique("/Shared/no-such-folder") + "/churn")
    assert "RESOURCE_DOES_NOT_EXIST" in str(refused.value) and "Parent directory" in str(refused.value)


def test_a_folder_the_app_may_not_write_is_a_clear_403(databricks_app, client, standin_workspace):
    folder = "/Users/e2e"  # a user's home: the app's principal holds nothing there once grants count
    with standin_workspace.grants.restored_after() as grants:
        grants.enforce()
        started = time.monotonic()
        answer = httpx.post(f"{databricks_app.url}/api/2.0/mlflow/experiments/create", json={"name": unique(f"{folder}/locked")}, timeout=120)
        assert answer.status_code == 403, answer.text
        body = answer.json()
        assert body["error_code"] == "PERMISSION_DENIED" and folder in body["message"], body
        assert "Traceback" not in answer.text
        assert time.monotonic() - started < 30  # refused at once, not retried
        # The app's own folder is still the app's: plain names keep working with grants enforced.
        assert client.create_experiment(unique("still-fine"))


def test_the_uis_create_experiment_dialog_with_a_plain_name(databricks_app, backing):
    from tests.e2e.test_browser import UI_TIMEOUT_MS, assert_no_error_shown, browser_page

    name = unique("made-in-the-dialog")
    with browser_page(databricks_app, platform_edge=True) as ui:
        ui.open("/experiments")
        ui.page.get_by_role("button", name="Create", exact=True).first.click(timeout=UI_TIMEOUT_MS)
        dialog = ui.page.get_by_role("dialog")
        dialog.get_by_role("textbox").first.fill(name)
        with ui.page.expect_response(lambda r: r.url.endswith("/experiments/create"), timeout=UI_TIMEOUT_MS) as created:
            dialog.get_by_role("button", name="Create", exact=True).click()
        assert created.value.status == 200, created.value.text()
        experiment_id = created.value.json()["experiment_id"]
        ui.page.wait_for_url(f"**/experiments/{experiment_id}**", timeout=UI_TIMEOUT_MS)  # the UI opens what it made
        assert_no_error_shown(ui)
        # The dialog asks whether the name is free before it creates: a 404 there means it is.
        unexpected = [a for a in ui.traffic.error_answers() if not (a[2] == 404 and "/experiments/get-by-name?" in a[1])]
        assert unexpected == []
    assert backing.get("experiments/get", experiment_id=experiment_id)["experiment"]["name"] == f"{FOLDER}/{name}"


def test_off_databricks_apps_without_a_folder_plain_names_get_a_400_saying_what_to_set(tmp_path, standin_workspace, monkeypatch):
    """A workspace tracking store on a machine of the user's own, no --experiment-folder: a plain name
    or the default experiment is refused by the app with a message that says what to set, full
    paths work."""
    import mlflow
    from mlflow.exceptions import MlflowException

    env = platform_env(standin_workspace)
    del env["DATABRICKS_APP_NAME"]  # not on Databricks Apps: no default folder
    app = AppProcess(tmp_path / "app", "--host", "127.0.0.1", "--backend-store-uri", "databricks", "--registry-store-uri", "databricks-uc")
    app.env = env
    app.start()
    try:
        app.wait_ready()
        assert "no --experiment-folder" in app.log_text()
        for name in [n for n in os.environ if n.startswith("DATABRICKS_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        client = mlflow.MlflowClient(tracking_uri=app.url)
        for refused_call in (lambda: client.create_experiment("churn"), lambda: client.create_run("0"), lambda: client.get_experiment_by_name("churn")):
            with pytest.raises(MlflowException) as refused:
                refused_call()
            assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
            assert "--experiment-folder (MLFLOW_APP_EXPERIMENT_FOLDER)" in refused.value.message
        experiment_id = client.create_experiment(unique("/Users/e2e/full-path"))
        assert client.create_run(experiment_id).info.experiment_id == experiment_id
    finally:
        app.stop()
