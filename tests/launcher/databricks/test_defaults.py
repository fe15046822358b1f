"""Databricks mode's defaults: the workspace's stores and JSON logs on Databricks Apps, nothing elsewhere."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

import launcher.server
from launcher.cli import main
from launcher.databricks.defaults import artifacts_warning, uses_workspace
from launcher.settings import Settings
from launcher.settings_table import SERVE_SETTINGS

ROWS = {row.field: row for row in SERVE_SETTINGS}


def default_backend_store_uri():
    return ROWS["backend_store_uri"].cli_default()


def default_registry_store_uri():
    return ROWS["registry_store_uri"].cli_default()


def default_log_format():
    return ROWS["log_format"].cli_default()


def test_defaults_off_databricks_apps(env):
    assert default_backend_store_uri() is None
    assert default_registry_store_uri() is None
    assert default_log_format() == "text"


def test_defaults_on_databricks_apps(env):
    env(DATABRICKS_APP_NAME="mlflow")
    assert default_backend_store_uri() == "databricks"
    assert default_registry_store_uri() == "databricks-uc"
    assert default_log_format() == "json"


@pytest.fixture
def serve_settings(env, monkeypatch, tmp_path):
    """`mlflow-app serve` as click parses it, handing its Settings over instead of running."""

    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    captured: list[Settings] = []
    monkeypatch.setattr(launcher.server, "run_server", captured.append)

    def run(*args: str) -> Settings:
        result = CliRunner().invoke(main, ["serve", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return captured.pop()

    return run


def test_serve_on_databricks_apps_uses_the_workspace(env, serve_settings):
    env(DATABRICKS_APP_NAME="mlflow", DATABRICKS_APP_PORT="8000")
    settings = serve_settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.backend_store_uri, settings.registry_store_uri) == ("databricks", "databricks-uc")
    assert settings.log_format == "json" and uses_workspace(settings)


def test_flags_win_over_the_databricks_apps_defaults(env, serve_settings):
    env(DATABRICKS_APP_NAME="mlflow")
    settings = serve_settings("--host", "127.0.0.1", "--backend-store-uri", "sqlite:///x.db", "--registry-store-uri", "sqlite:///x.db", "--log-format", "text")
    assert (settings.host, settings.backend_store_uri, settings.registry_store_uri, settings.log_format) == ("127.0.0.1", "sqlite:///x.db", "sqlite:///x.db", "text")
    assert not uses_workspace(settings)


def test_serve_elsewhere_keeps_the_embedded_defaults(env, serve_settings):
    settings = serve_settings()
    assert (settings.host, settings.backend_store_uri, settings.registry_store_uri, settings.log_format) == ("127.0.0.1", None, None, "text")


@pytest.mark.parametrize(
    ("backend", "registry", "expected"),
    [
        ("databricks", None, True),
        ("databricks://my-profile", None, True),
        (None, "databricks-uc", True),
        ("sqlite:///x.db", "databricks-uc", True),
        (None, None, False),
        ("postgresql://h/db", "uc:http://localhost:8080", False),  # open-source Unity Catalog
    ],
)
def test_uses_workspace(backend, registry, expected):
    assert uses_workspace(Settings(backend_store_uri=backend, registry_store_uri=registry)) is expected


def test_artifacts_warning_only_on_databricks_apps_without_a_destination(env, tmp_path):
    settings = Settings(backend_store_uri="databricks", data_dir=tmp_path)
    assert artifacts_warning(settings) is None
    env(DATABRICKS_APP_NAME="mlflow")
    assert "lost when it restarts" in artifacts_warning(settings)
    assert "MLFLOW_ARTIFACTS_DESTINATION" in artifacts_warning(settings)
    assert artifacts_warning(Settings(artifacts_destination="/Volumes/main/default/mlflow")) is None
    assert artifacts_warning(Settings(serve_artifacts=False)) is None
