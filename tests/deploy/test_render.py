"""`app.yaml`: golden files for the three shapes it takes, what the platform reads from it, and the
`mlflow-app render` command. UPDATE_GOLDEN=1 rewrites the golden files after a wanted change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from deploy import DeployError
from deploy.render import COMMAND, UI_DIR_IN_SOURCE, VOLUME_ENV, VOLUME_RESOURCE, databricks_app_config, parse_env_options, render_app_yaml
from launcher.cli import main
from tests.deploy.conftest import GOLDEN, copy_project

CASES = {
    "app.yaml": {"ui_in_source": False},
    "app-git-mlflow.yaml": {"ui_in_source": True},
    "app-extra-env.yaml": {"ui_in_source": False, "extra_env": [("MLFLOW_WORKERS", "2"), ("MLFLOW_APP_LOG_FORMAT", "text"), ("NOTE", 'say "hi" \\ ünïcode')]},
}


def golden(name: str, text: str) -> str:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CASES)
def test_matches_golden_file(name):
    text = render_app_yaml(databricks_app_config(**CASES[name]))
    assert text == golden(name, text)


@pytest.mark.parametrize("name", CASES)
def test_is_what_the_platform_reads(name):
    """A list command (not run through a shell) and env items with a value or a valueFrom, all strings."""
    parsed = yaml.safe_load(render_app_yaml(databricks_app_config(**CASES[name])))
    assert set(parsed) == {"command", "env"}
    assert parsed["command"] == list(COMMAND)
    for item in parsed["env"]:
        assert set(item) in ({"name", "value"}, {"name", "valueFrom"}), item
        assert all(isinstance(v, str) for v in item.values()), item
    assert len({item["name"] for item in parsed["env"]}) == len(parsed["env"])


def test_databricks_settings():
    env = {item["name"]: item for item in yaml.safe_load(render_app_yaml(databricks_app_config(ui_in_source=True)))["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "databricks"
    assert env["MLFLOW_REGISTRY_STORE_URI"]["value"] == "databricks-uc"
    assert env["MLFLOW_APP_LOG_FORMAT"]["value"] == "json"
    assert env[VOLUME_ENV] == {"name": VOLUME_ENV, "valueFrom": VOLUME_RESOURCE}
    assert env["MLFLOW_APP_UI_DIR"]["value"] == UI_DIR_IN_SOURCE


def test_extra_env_replaces_ours_in_place_and_keeps_order():
    names = [v.name for v in databricks_app_config(ui_in_source=False, extra_env=[("MLFLOW_APP_LOG_FORMAT", "text"), ("A", "1")]).env]
    assert names == ["MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI", "MLFLOW_APP_LOG_FORMAT", VOLUME_ENV, "A"]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("MLFLOW_APP_AUTH_TOKEN=abcdefghijklmnopq", "looks like a credential"),
        ("DATABRICKS_CLIENT_SECRET=x", "set by Databricks Apps itself"),
        ("DATABRICKS_TOKEN=x", "looks like a credential"),
        ("DATABRICKS_APP_PORT=9000", "set by Databricks Apps itself"),
        ("1BAD=x", "is not an environment variable name"),
        ("NO_EQUALS_SIGN", "has no '='"),
        ("MULTI=line\nvalue", "control characters or line breaks"),
    ],
)
def test_refused_env(item, message):
    with pytest.raises(DeployError, match=message):
        databricks_app_config(ui_in_source=False, extra_env=parse_env_options([item]))


def test_render_command_prints_the_golden_file_for_this_checkout():
    """This repository locks MLflow from PyPI: no UI in the upload."""
    result = CliRunner().invoke(main, ["render"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "app.yaml").read_text(encoding="utf-8")


def test_render_command_for_a_git_mlflow_and_to_a_file(git_project, tmp_path):
    out = tmp_path / "app.yaml"
    result = CliRunner().invoke(main, ["render", "--project-dir", str(git_project), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == (GOLDEN / "app-git-mlflow.yaml").read_text(encoding="utf-8")


def test_render_command_refuses_a_credential_in_one_line():
    result = CliRunner().invoke(main, ["render", "--env", "MY_SECRET=hunter2hunter2"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "looks like a credential" in result.stderr
    assert "hunter2" not in result.output


def test_the_command_runs_from_the_uploaded_folder(tmp_path):
    """`python -m launcher` needs no install of mlflow-app: the folder's own packages are imported."""
    folder = copy_project(None, tmp_path / "source_code")
    probe = "import launcher, proxy; print(launcher.__file__); print(proxy.__file__)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=folder, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(folder)) for path in found), found
    result = subprocess.run([sys.executable, *COMMAND[1:], "--help"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mlflow-app serve")
