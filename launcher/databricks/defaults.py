"""Databricks mode decided from the settings: whether a store is a workspace's, and what to warn of on Databricks Apps.

The defaults that differ on Databricks Apps (the workspace's stores, JSON logs, all interfaces) are
in the settings table (launcher/settings_table.py, `on_apps`).
"""

from __future__ import annotations

from launcher.settings import Settings, on_databricks_apps, uri_scheme

# Store URIs served by a workspace (`databricks://<profile>` included): these need the start-up
# check and the child's settings for a workspace. `uc` is the open-source Unity Catalog server,
# not a workspace.
WORKSPACE_SCHEMES = frozenset({"databricks", "databricks-uc"})


def uses_workspace(settings: Settings) -> bool:
    """Whether MLflow's tracking or registry store is a Databricks workspace."""
    uris = (settings.backend_store_uri, settings.registry_store_uri)
    return any(uri and uri_scheme(uri) in WORKSPACE_SCHEMES for uri in uris)


def artifacts_warning(settings: Settings) -> str | None:
    """On Databricks Apps, served artifacts without a destination land on the app's local disk."""
    if on_databricks_apps() and settings.serve_artifacts and not settings.artifacts_destination:
        return (
            f"artifacts go to {settings.effective_artifacts_destination} on the app's own disk and are lost when it "
            "restarts; set --artifacts-destination (MLFLOW_ARTIFACTS_DESTINATION) to a Unity Catalog volume"
        )
    return None
