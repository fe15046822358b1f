"""`--experiment-folder`: its default on Databricks Apps, and the check that it is an absolute workspace folder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import launcher.server
from launcher.cli import main
from launcher.settings import Settings, SettingsError, check_experiment_folder


@pytest.fixture
def captured(monkeypatch, tmp_path) -> list[Settings]:
    """`serve` builds and validates Settings, then hands them here instead of running."""
    for name in ("MLFLOW_APP_EXPERIMENT_FOLDER", "DATABRICKS_APP_NAME", "DATABRICKS_APP_PORT", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    runs: list[Settings] = []
    monkeypatch.setattr(launcher.server, "run_server", runs.append)
    return runs


def serve(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["serve", "--host", "127.0.0.1", *args], env=env, catch_exceptions=False)


def test_no_folder_off_databricks_apps(captured):
    assert serve().exit_code == 0
    assert captured[0].experiment_folder is None


def test_on_databricks_apps_the_apps_own_shared_folder(captured):
    assert serve(env={"DATABRICKS_APP_NAME": "churn-tracking"}).exit_code == 0
    assert captured[0].experiment_folder == "/Shared/churn-tracking"


@pytest.mark.parametrize(("args", "env"), [(("--experiment-folder", "/Users/sp/mlflow"), {}), ((), {"MLFLOW_APP_EXPERIMENT_FOLDER": "/Users/sp/mlflow"})])
def test_a_folder_given_wins_over_the_default(captured, args, env):
    assert serve(*args, env={"DATABRICKS_APP_NAME": "churn-tracking", **env}).exit_code == 0
    assert captured[0].experiment_folder == "/Users/sp/mlflow"


@pytest.mark.parametrize("folder", ["mlflow", "Shared/mlflow", "/", "/Shared/mlflow/", "/Shared//mlflow", "/Shared/../Users/x", "/Shared/./x", ""])
def test_a_folder_that_is_not_absolute_is_refused_in_one_line(captured, folder):
    result = serve("--experiment-folder", folder)
    assert result.exit_code != 0 and captured == []
    assert "--experiment-folder" in result.output and "absolute workspace folder" in result.output
    with pytest.raises(SettingsError):
        check_experiment_folder(folder)


@pytest.mark.parametrize("folder", ["/Shared/mlflow", "/Users/someone@example.com/experiments", "/Shared/team a/mlflow"])
def test_absolute_folders_pass(folder):
    check_experiment_folder(folder)
