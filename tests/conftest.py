import os

import pytest

from tests.app_process import QUIET_ENV, AppProcess

os.environ.update(QUIET_ENV)  # the mlflow client in this process sends no telemetry either


@pytest.fixture(scope="session")
def app(tmp_path_factory) -> AppProcess:
    """One real mlflow-app (embedded default) shared by every test that only talks to it."""
    running = AppProcess(tmp_path_factory.mktemp("shared-app")).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def tracking(app, monkeypatch):
    """The real mlflow client pointed at the shared app, as a user would configure it."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", app.url)
    # set_registry_uri writes MLFLOW_REGISTRY_URI too: set through monkeypatch, it is undone after.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", app.url)
    mlflow.set_tracking_uri(app.url)
    mlflow.set_registry_uri(app.url)  # not a registry another test set process-wide (a Databricks app's)
    yield mlflow.MlflowClient(tracking_uri=app.url, registry_uri=app.url)
    if mlflow.active_run():
        mlflow.end_run()
    # Both are process-wide: later tests' clients (a Databricks app's) must not inherit them.
    mlflow.set_registry_uri(None)
    mlflow.set_tracking_uri(None)
