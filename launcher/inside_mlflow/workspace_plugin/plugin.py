"""The ASGI app the MLflow child serves for a workspace: MLflow's own, adapted first (docs/databricks.md)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("mlflow_app.child")

# The `mlflow.app` entry point name, passed as `mlflow server --app-name`. Not in pyproject.toml: the
# launcher declares it at run time in a dist-info it puts on the child's PYTHONPATH
# (launcher/databricks/child_environment.py, write_child_plugin), as our packages are not installed
# on Databricks Apps.
WORKSPACE_APP_NAME = "mlflow-app-workspace"


def create_workspace_app():
    """Install the workspace adaptations in MLflow's server handlers, then return MLflow's app.

    A factory, so that MLflow's CLI process (which only checks that the entry point is callable)
    does not build stores; the uvicorn worker calls it once.
    """
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR, handlers
    from mlflow.server.fastapi_app import app

    from launcher.inside_mlflow.workspace_plugin.artifacts import ProxiedArtifactRouter, register_proxied_scheme
    from launcher.inside_mlflow.workspace_plugin.experiments import adapt_tracking_store
    from launcher.inside_mlflow.workspace_plugin.registry import adapt_registry_store, is_unity_catalog_store

    tracking_store = handlers._get_tracking_store()  # also sets this process's tracking URI
    registry_store = handlers._get_model_registry_store()  # and its registry URI
    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR)
    serving_artifacts = os.environ.get(SERVE_ARTIFACTS_ENV_VAR) == "true" and bool(destination)
    if serving_artifacts:
        adapt_tracking_store(tracking_store)
        register_proxied_scheme(destination)
        handlers._artifact_repo = ProxiedArtifactRouter(destination)
    unity_catalog = is_unity_catalog_store(registry_store)
    if unity_catalog:
        adapt_registry_store(registry_store, proxied_downloads=serving_artifacts)
    log.info(
        "workspace adaptations installed: artifacts %s, Unity Catalog registry %s",
        f"served from {destination}" if serving_artifacts else "left to the workspace",
        "adapted" if unity_catalog else "not in use",
    )
    return app
