"""What the MLflow child gets for a workspace's stores: bounded retries and timeouts, the databricks-sdk
profile, the credentials passed through."""

from __future__ import annotations

import configparser

from launcher.databricks.child_environment import CHILD_HTTP_ENV, SDK_PROFILE, workspace_environment, write_sdk_profile
from launcher.mlflow_process import mlflow_environment
from launcher.settings import Settings


def test_workspace_environment_bounds_mlflows_retries(tmp_path):
    profile = write_sdk_profile(tmp_path)
    extra = workspace_environment({"DATABRICKS_HOST": "https://w.example"}, profile)
    assert {k: extra[k] for k in CHILD_HTTP_ENV} == CHILD_HTTP_ENV
    assert extra["DATABRICKS_CONFIG_FILE"] == str(profile)
    assert extra["DATABRICKS_CONFIG_PROFILE"] == SDK_PROFILE


def test_workspace_environment_keeps_the_operators_values(tmp_path):
    base = {"DATABRICKS_HOST": "https://w.example", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "DATABRICKS_CONFIG_PROFILE": "mine"}
    extra = workspace_environment(base, write_sdk_profile(tmp_path))
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in extra
    assert "DATABRICKS_CONFIG_PROFILE" not in extra and "DATABRICKS_CONFIG_FILE" not in extra


def test_workspace_environment_leaves_databrickscfg_alone_without_a_host(tmp_path):
    """Without DATABRICKS_HOST the credentials come from ~/.databrickscfg, which our file would hide."""
    extra = workspace_environment({}, write_sdk_profile(tmp_path))
    assert "DATABRICKS_CONFIG_FILE" not in extra and "DATABRICKS_CONFIG_PROFILE" not in extra


def test_sdk_profile_holds_timeouts_and_nothing_else(tmp_path):
    parser = configparser.ConfigParser()
    parser.read(write_sdk_profile(tmp_path))
    assert parser.sections() == [SDK_PROFILE]
    assert dict(parser[SDK_PROFILE]) == {"http_timeout_seconds": "15", "retry_timeout_seconds": "10"}


def test_databricks_sdk_reads_the_profile_and_the_environments_credentials(signed_in, tmp_path, monkeypatch):
    """What the child's databricks-sdk sees: our timeouts from the file, the platform's OAuth credentials."""
    from databricks.sdk.config import Config

    for name, value in workspace_environment(dict(__import__("os").environ), write_sdk_profile(tmp_path)).items():
        monkeypatch.setenv(name, value)
    config = Config()
    assert config.http_timeout_seconds == 15 and config.retry_timeout_seconds == 10
    assert config.host == signed_in.url and config.client_id == signed_in.client_id
    assert config.authenticate()["Authorization"].startswith("Bearer eyJstandin.")
    assert config.auth_type == "oauth-m2m"


def test_mlflow_environment_for_a_workspace_store(tmp_path):
    profile = write_sdk_profile(tmp_path)
    base = {"DATABRICKS_HOST": "https://w.example", "DATABRICKS_CLIENT_ID": "id", "DATABRICKS_CLIENT_SECRET": "s3cret-value"}
    env = mlflow_environment(Settings(backend_store_uri="databricks", registry_store_uri="databricks-uc"), base, sdk_profile=profile)
    assert env["DATABRICKS_CLIENT_SECRET"] == "s3cret-value"  # passed through: MLflow signs in with it
    assert env["MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT"] == "10"
    assert env["DATABRICKS_CONFIG_FILE"] == str(profile)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in mlflow_environment(Settings(), base, sdk_profile=profile)
