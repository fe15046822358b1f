"""`mlflow-app deploy` against the stand-in workspace: what reaches the workspace (files, formats, the
app and its volume, a snapshot deployment), what the operator reads, and failures said clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import main
from tests.deploy.conftest import GIT_COMMIT, GOLDEN, REPO
from tests.deploy.standin_apps import CLIENT_ID, CLIENT_SECRET, USER, WORKSPACE_ID

APP = "my-mlflow"
VOLUME = "main.mlflow.artifacts"
SOURCE = f"/Workspace/Users/{USER}/mlflow-app/{APP}"
URL = f"https://{APP}-{WORKSPACE_ID}.aws.databricksapps.com"


def deploy(*args: str):
    return CliRunner().invoke(main, ["deploy", *args])


def existing_app(standin, name: str = APP, *, volume: str | None = VOLUME, compute: str = "ACTIVE") -> None:
    resources = [{"name": "artifact-volume", "uc_securable": {"securable_full_name": volume, "securable_type": "VOLUME", "permission": "WRITE_VOLUME"}}] if volume else []
    standin.state.apps[name] = {
        "name": name, "resources": resources, "url": f"https://{name}-{WORKSPACE_ID}.aws.databricksapps.com",
        "compute_status": {"state": compute, "message": ""}, "compute_size": "MEDIUM", "service_principal_client_id": "sp", "_polls": 0,
        "app_status": {"state": "RUNNING", "message": "App is running."},
    }  # fmt: skip


def test_first_deploy_creates_the_app_uploads_and_deploys_a_snapshot(standin):
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 0, result.output
    state = standin.state

    app = state.apps[APP]
    assert app["resources"] == [
        {"name": "artifact-volume", "description": "MLflow artifacts", "uc_securable": {"securable_full_name": VOLUME, "securable_type": "VOLUME", "permission": "WRITE_VOLUME"}}
    ]
    files = state.files_under(SOURCE)
    assert {"app.yaml", "requirements.txt", "launcher/__main__.py", "launcher/cli.py", "proxy/app.py"} <= set(files)
    assert not any(name.startswith("deploy/") for name in files)  # deploy/ runs only where one deploys
    assert {o.kind for o in files.values()} == {"FILE"} and {o.format for o in files.values()} == {"AUTO"}  # .py stays a file
    assert files["app.yaml"].content.decode() == (GOLDEN / "app.yaml").read_text()
    requirements = files["requirements.txt"].content.decode()
    assert "mlflow==3.17.2" in requirements.splitlines() and "databricks-sdk==" in requirements
    assert (REPO / "launcher" / "cli.py").read_bytes() == files["launcher/cli.py"].content

    (deployment,) = state.deployments.values()
    assert (deployment["mode"], deployment["source_code_path"], deployment["status"]["state"]) == ("SNAPSHOT", SOURCE, "SUCCEEDED")
    assert state.snapshots[deployment["deployment_id"]].keys() == files.keys()
    assert app["active_deployment"]["deployment_id"] == deployment["deployment_id"]

    out = result.stdout
    assert f"Creating app {APP} with volume {VOLUME} as its resource 'artifact-volume' (read and write)" in out
    assert f"Uploading {len(files)} files" in out and f"uploaded {len(files)}/{len(files)}" in out
    assert "compute STARTING: App compute is starting." in out and "compute ACTIVE after" in out
    steps = ("IN_PROGRESS: Preparing source code for new app deployment.", "IN_PROGRESS: Installing packages from requirements.txt.", "SUCCEEDED: App started successfully.")
    assert [line.split(" s  ", 1)[1] for line in out.splitlines() if " s  " in line] == list(steps)  # each state once, in order
    assert out.rstrip().splitlines()[-2:] == [f"App URL: {URL}", f"Logs:    {URL}/logz"]


def test_a_failed_deployment_exits_non_zero_with_the_platforms_message(standin):
    reason = "Error installing packages: ERROR: No matching distribution found for mlflow==99.0"
    standin.state.deployment_endings["broken-app"] = ("FAILED", reason)
    result = deploy("--app-name", "broken-app", "--volume", VOLUME)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Deployment ") and f"of app broken-app FAILED: {reason}." in line
    assert line.endswith(f"The app's log: https://broken-app-{WORKSPACE_ID}.aws.databricksapps.com/logz")
    assert "App URL:" not in result.stdout


def test_a_cancelled_deployment_ends_the_wait(standin):
    """databricks-sdk's waiter stops only at SUCCEEDED or FAILED; a CANCELLED deployment must end it too."""
    standin.state.deployment_endings["cancelled-app"] = ("CANCELLED", "Deployment was cancelled by someone@example.com.")
    result = deploy("--app-name", "cancelled-app", "--volume", VOLUME, "--timeout", "30")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "of app cancelled-app CANCELLED: Deployment was cancelled by someone@example.com." in line


def test_a_deployment_still_running_at_the_timeout_is_reported(standin):
    standin.state.deployment_endings["slow-app"] = ("IN_PROGRESS", "Installing packages from requirements.txt.")
    result = deploy("--app-name", "slow-app", "--volume", VOLUME, "--timeout", "1")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Deployment ") and "of app slow-app is still IN_PROGRESS after 1 s; follow it at https://slow-app-" in line


def test_compute_that_never_starts_is_reported_at_the_timeout(standin):
    standin.state.compute_start_polls = 10**6
    result = deploy("--app-name", APP, "--volume", VOLUME, "--timeout", "1")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line == f"Error: The compute of app {APP} did not become ACTIVE within 1 s; look at the app's page in the workspace."
    assert not standin.state.deployments


def test_deploy_with_an_oauth_client(oauth_standin):
    """DATABRICKS_HOST with DATABRICKS_CLIENT_ID/SECRET: databricks-sdk fetches a token, and the files go to
    the service principal's folder (the workspace says who the caller is)."""
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 0, result.output
    requests = oauth_standin.state.requests
    assert ("GET", "/oidc/.well-known/oauth-authorization-server") in requests and ("POST", "/oidc/v1/token") in requests
    assert oauth_standin.state.files_under(f"/Workspace/Users/{CLIENT_ID}/mlflow-app/{APP}")
    assert result.stdout.rstrip().endswith(f"Logs:    {URL}/logz")
    assert CLIENT_SECRET not in result.output


def test_a_wrong_client_secret_is_one_line(oauth_standin, monkeypatch):
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "dose-not-the-right-secret")
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Looking up the current user failed: Databricks authentication: invalid_client") and "DATABRICKS_CLIENT_SECRET" in line
    assert "dose-not-the-right-secret" not in result.output
    assert not oauth_standin.state.calls("/api/2.0/apps") and not oauth_standin.state.calls("/api/2.0/workspace/")


def test_a_new_app_gets_the_compute_size_asked_for(standin):
    result = deploy("--app-name", APP, "--volume", VOLUME, "--compute-size", "large")
    assert result.exit_code == 0, result.output
    assert standin.state.apps[APP]["compute_size"] == "LARGE"
    assert f"Creating app {APP} on LARGE compute with volume {VOLUME}" in result.stdout


def test_an_existing_app_on_another_compute_size_is_refused_before_uploading(standin):
    existing_app(standin)
    result = deploy("--app-name", APP, "--compute-size", "LARGE")
    assert result.exit_code == 1
    assert f"App {APP} runs on MEDIUM compute, not LARGE" in result.stderr
    assert not standin.state.calls("/api/2.0/workspace/")


def test_redeploy_uses_the_existing_app_and_its_volume(standin):
    existing_app(standin)
    result = deploy("--app-name", APP)
    assert result.exit_code == 0, result.output
    assert ("POST", "/api/2.0/apps") not in standin.state.requests
    assert f"App {APP} exists ({URL})" in result.stdout
    assert [d["mode"] for d in standin.state.deployments.values()] == ["SNAPSHOT"]


def test_a_stopped_app_is_started_first(standin):
    existing_app(standin, compute="STOPPED")
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 0, result.output
    assert ("POST", f"/api/2.0/apps/{APP}/start") in standin.state.requests
    assert f"Starting the stopped app {APP}" in result.stdout


@pytest.mark.parametrize(
    ("volume", "args", "message"),
    [
        (None, ["--volume", VOLUME], f"App {APP} has no volume resource named 'artifact-volume', which app.yaml reads"),
        ("main.other.vol", ["--volume", VOLUME], f"App {APP} keeps its artifacts on main.other.vol, not {VOLUME}"),
    ],
)
def test_an_existing_app_without_our_volume_is_refused_before_uploading(standin, volume, args, message):
    existing_app(standin, volume=volume)
    result = deploy("--app-name", APP, *args)
    assert result.exit_code == 1 and message in result.stderr
    assert not [c for c in standin.state.requests if c[1].startswith("/api/2.0/workspace/")]


def test_a_new_app_needs_a_volume(standin):
    result = deploy("--app-name", APP)
    assert result.exit_code == 1
    assert f"App {APP} does not exist yet; pass --volume catalog.schema.volume" in result.stderr
    assert standin.state.apps == {} and not standin.state.files_under("/Workspace")


def test_volume_as_a_path_and_a_chosen_source_path(standin):
    result = deploy("--app-name", APP, "--volume", "/Volumes/main/mlflow/artifacts", "--source-path", "/Workspace/Shared/apps/mlflow")
    assert result.exit_code == 0, result.output
    assert standin.state.apps[APP]["resources"][0]["uc_securable"]["securable_full_name"] == VOLUME
    assert standin.state.files_under("/Workspace/Shared/apps/mlflow")
    assert ("GET", "/api/2.0/preview/scim/v2/Me") not in standin.state.requests


def test_dry_run_sends_nothing(standin):
    result = deploy("--app-name", APP, "--volume", VOLUME, "--dry-run", "--compute-size", "LARGE")
    assert result.exit_code == 0, result.output
    assert standin.state.requests == []
    out = result.stdout
    assert "requirements.txt: " in out and "mlflow 3.17.2 from PyPI" in out
    assert "UI assets: from the mlflow wheel pip installs on the platform" in out
    assert "Dry run: nothing was sent to the workspace." in out
    assert f"create app {APP} on LARGE compute with volume {VOLUME} as resource 'artifact-volume' (WRITE_VOLUME)" in out
    assert "SNAPSHOT" in out and "<app url>/logz" in out


def test_git_mlflow_uploads_the_ui_and_keeps_the_git_url(standin, git_project, ui_wheel):
    result = deploy("--app-name", APP, "--volume", VOLUME, "--project-dir", str(git_project), "--ui-wheel", str(ui_wheel))
    assert result.exit_code == 0, result.output
    files = standin.state.files_under(SOURCE)
    assert {"mlflow-ui/index.html", "mlflow-ui/static-files/static/js/main.0a1b2c3d.js"} <= set(files)
    assert not [p for p in files if p.endswith(".map")]
    env = {e["name"]: e for e in yaml.safe_load(files["app.yaml"].content)["env"]}
    assert env["MLFLOW_APP_UI_DIR"]["value"] == "mlflow-ui"
    assert f"mlflow @ git+https://github.com/mlflow/mlflow.git@{GIT_COMMIT}" in files["requirements.txt"].content.decode()
    assert "UI assets: the UI of mlflow 3.17.2 from mlflow-3.17.2-py3-none-any.whl" in result.stdout


def test_a_secret_in_the_upload_stops_everything_before_any_request(standin, git_project, ui_wheel):
    (git_project / "proxy" / ".env").write_text("DATABRICKS_TOKEN=whatever\n")
    result = deploy("--app-name", APP, "--volume", VOLUME, "--project-dir", str(git_project), "--ui-wheel", str(ui_wheel))
    assert result.exit_code == 1
    assert "Nothing was uploaded: proxy/.env is a kind of file that holds secrets (.env)" in result.stderr
    assert standin.state.requests == []


def test_a_file_over_10_mb_stops_everything_before_any_request(standin, git_project, ui_wheel):
    (git_project / "proxy" / "model.bin").write_bytes(b"\0" * 10_000_001)  # under 10 MiB, over the platform's 10 MB
    result = deploy("--app-name", APP, "--volume", VOLUME, "--project-dir", str(git_project), "--ui-wheel", str(ui_wheel))
    assert result.exit_code == 1
    assert "Nothing was uploaded: proxy/model.bin is 10,000,001 bytes, over the platform's limit of 10 MB (10,000,000 bytes) per file" in result.stderr
    assert standin.state.requests == []


def test_a_refused_token_is_one_line(standin, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", "not-the-right-token")
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Looking up the current user failed") and "Invalid access token" in line
    assert "not-the-right-token" not in result.output


def test_no_credentials_at_all(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = deploy("--app-name", APP, "--volume", VOLUME)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Databricks authentication: ") and "pass --profile, or run `databricks auth login`" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--app-name", "My_App"], "--app-name: 'My_App' is not an app name"), (["--app-name", APP, "--volume", "artifacts"], "--volume: 'artifacts' is not a Unity Catalog volume")],
)
def test_bad_names_are_refused_first(standin, args, message):
    result = deploy(*args)
    assert result.exit_code == 1 and message in result.stderr
    assert standin.state.requests == []


def test_the_console_script_end_to_end(standin):
    """The installed `mlflow-app` command, as an operator runs it (its own process, its own imports,
    databricks-sdk's waiters at their own pace: about a second per step)."""
    standin.state.compute_start_polls = 1
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-app")
    result = subprocess.run([script, "deploy", "--app-name", APP, "--volume", VOLUME], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f"Logs:    {URL}/logz")
    assert standin.state.deployments and standin.state.files_under(SOURCE)
