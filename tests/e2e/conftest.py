"""A second real app, with authentication on and known secret values in its environment."""

from __future__ import annotations

import pytest

from tests.app_process import AppProcess

# Distinctive values, so that finding any of them in output is a leak and nothing else.
AUTH_TOKEN = "appTOKENf7c3a91e5b0d4c2a8e6f"
SECRET_ENV = {
    "DATABRICKS_TOKEN": "dapiSECRETdb5e8c1a7f93d20b46",
    "DATABRICKS_CLIENT_SECRET": "doseSECRETcs2b9d4e7a1c6f3058",
    "MLFLOW_APP_AUTH_TOKEN": AUTH_TOKEN,
}


@pytest.fixture(scope="session")
def secured_app(tmp_path_factory) -> AppProcess:
    """mlflow-app on 127.0.0.1 with MLFLOW_APP_AUTH_TOKEN and Databricks credentials set.

    Shared by the authentication and secrets tests; the secrets test stops MLflow once and waits
    for it to come back, so it can run in any order with the rest."""
    running = AppProcess(tmp_path_factory.mktemp("secured-app"), env=SECRET_ENV).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def standin_workspace(tmp_path_factory):
    """A stand-in Databricks workspace (tests/standin/workspace.py) with its own real MLflow behind
    bearer-token checks: OAuth machine-to-machine like Databricks Apps, on a free loopback port."""
    from tests.standin.workspace import StandinWorkspace

    workspace = StandinWorkspace(tmp_path_factory.mktemp("standin-workspace")).start()
    try:
        yield workspace
    finally:
        workspace.stop()
