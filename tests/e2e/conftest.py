"""A second real app, with authentication on and known secret values in its environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import pytest

from tests.app_process import QUIET_ENV, AppProcess
from tests.postgres_server import PostgresServer, postgres_bin_dir

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
    workspace.folders.add_home("e2e")  # a user of the workspace, in whose home folder the Databricks-mode tests name experiments
    try:
        yield workspace
    finally:
        workspace.stop()


# --- Databricks mode -----------------------------------------------------------------------------

DATABRICKS_APP_NAME = "mlflow-e2e"
# The app's volume resource: Databricks Apps puts its path in MLFLOW_ARTIFACTS_DESTINATION (deploy/).
VOLUME = "/Volumes/main/default/mlflow-artifacts"


def platform_env(workspace, **overrides: str) -> dict[str, str]:
    """What Databricks Apps gives the app, this machine's own Databricks settings left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env.update(QUIET_ENV, DATABRICKS_APP_NAME=DATABRICKS_APP_NAME, MLFLOW_ARTIFACTS_DESTINATION=VOLUME, **workspace.oauth_env())
    env.update(overrides)
    return env


@contextmanager
def running_databricks_app(directory, env: dict[str, str]) -> Iterator[AppProcess]:
    """mlflow-app in Databricks mode with `env` (see platform_env), ready, stopped afterwards: every
    default from DATABRICKS_APP_NAME but the address, since a test must not listen on 0.0.0.0."""
    app = AppProcess(directory, "--host", "127.0.0.1")
    app.env = env
    app.start()
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="session")
def databricks_app(tmp_path_factory, standin_workspace) -> AppProcess:
    """The app against the stand-in, shared by the Databricks-mode modules."""
    with running_databricks_app(tmp_path_factory.mktemp("databricks-app"), platform_env(standin_workspace)) as app:
        yield app


@pytest.fixture
def client(databricks_app, monkeypatch) -> mlflow.MlflowClient:
    """The real mlflow client, with the app's URL and no Databricks credentials of its own."""
    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", databricks_app.url)
    # The registry too: without it MlflowClient and models:/ URIs take a registry set process-wide.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", databricks_app.url)
    return mlflow.MlflowClient(tracking_uri=databricks_app.url, registry_uri=databricks_app.url)


@pytest.fixture(scope="session")
def backing(standin_workspace):
    """Queries to the stand-in's own MLflow, around the workspace's checks: what landed there."""
    from tests.standin.workspace import BackingMlflow

    return BackingMlflow(standin_workspace.backing_url)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL on 127.0.0.1, shared by the tests that create databases in it. ./run-tests
    installs it on Debian; elsewhere it may be missing."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); ./run-tests installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): ./run-tests installs it, or apt-get install postgresql")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()
