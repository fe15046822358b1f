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
    does not build stores; the uvicorn worker calls it once. On an MLflow release the adaptations
    were not tested with, the worker stops with one line saying what to install (mlflow_internals.py).
    """
    try:
        from launcher.inside_mlflow import mlflow_internals
    except ImportError as exc:  # UntestedMlflow: its message says what to install
        log.error("%s", exc)
        raise SystemExit(1) from None
    import mlflow
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.fastapi_app import app
    from mlflow.utils.uri import is_databricks_uri

    from launcher.inside_mlflow.workspace_plugin.artifacts import ProxiedArtifactRouter
    from launcher.inside_mlflow.workspace_plugin.experiments import EXPERIMENT_FOLDER_ENV, adapt_experiment_names, adapt_tracking_store
    from launcher.inside_mlflow.workspace_plugin.permissions import GrantNamingRepository, install_refusal_handler, name_refusals_of
    from launcher.inside_mlflow.workspace_plugin.registry import adapt_registry_store

    tracking_store, registry_store = mlflow_internals.server_stores()  # also sets this process's tracking and registry URIs
    destination = mlflow_internals.served_artifacts_destination()
    if destination:
        adapt_tracking_store(tracking_store)
        # `mlflow-artifacts:` URIs resolved inside this process already name the destination: the
        # `mlflow.artifact_repository` entry point the launcher declares (artifacts.proxied_repository).
        # A grant the app lacks answers 403 naming it, not 500 (permissions.py).
        mlflow_internals.serve_artifacts_from(GrantNamingRepository(ProxiedArtifactRouter(destination), destination))
    install_refusal_handler(mlflow_flask_app)
    # Workspace paths for experiment names, and no experiment 0, whether or not artifacts are served.
    experiment_folder = os.environ.get(EXPERIMENT_FOLDER_ENV) or None
    workspace_tracking = is_databricks_uri(mlflow.get_tracking_uri())
    if workspace_tracking:
        adapt_experiment_names(tracking_store, experiment_folder)
    unity_catalog = mlflow_internals.is_unity_catalog_registry_store(registry_store)
    if unity_catalog:
        adapt_registry_store(registry_store, proxied_downloads=bool(destination))
    # Last, over the other adaptations: a workspace 403 names the missing grant (permissions.py).
    for store in {id(tracking_store): tracking_store, id(registry_store): registry_store}.values():
        name_refusals_of(store)
    log.info(
        "workspace adaptations installed: artifacts %s, Unity Catalog registry %s, experiments named without a folder %s",
        f"served from {destination}" if destination else "left to the workspace",
        "adapted" if unity_catalog else "not in use",
        (f"go to {experiment_folder}" if experiment_folder else "refused (no --experiment-folder)") if workspace_tracking else "left to the tracking store",
    )
    return app
