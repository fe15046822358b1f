"""Experiments created through the app keep their artifacts behind the app.

A workspace gives a new experiment a `dbfs:/databricks/mlflow-tracking/<id>` location, which a
client that knows only the app's URL cannot use: it would need its own workspace credentials.
An experiment created here without a location gets `mlflow-artifacts:/experiments/<uuid>`
instead, the scheme every MLflow client resolves against its tracking server, so its runs'
artifacts (and logged models) go through the app to the artifacts destination (a Unity Catalog
volume on Databricks Apps). A location the caller gives is kept as it is.
"""

from __future__ import annotations

import uuid

EXPERIMENTS_PREFIX = "experiments"


def new_experiment_location() -> str:
    # The id is not known before the workspace creates the experiment, and a location cannot be
    # changed afterwards, so a random folder keeps experiments apart.
    return f"mlflow-artifacts:/{EXPERIMENTS_PREFIX}/{uuid.uuid4().hex}"


def adapt_tracking_store(store) -> None:
    """Make `store` (the server's tracking store instance) give new experiments proxied locations."""
    base = type(store)

    class ProxiedLocationTrackingStore(base):
        def create_experiment(self, name, artifact_location=None, tags=None):
            return super().create_experiment(name, artifact_location or new_experiment_location(), tags)

    ProxiedLocationTrackingStore.__name__ = f"ProxiedLocation{base.__name__}"
    # On the instance only: the stores MLflow builds elsewhere in this process stay as they are,
    # and isinstance checks in MLflow's handlers still hold.
    from launcher.inside_mlflow import mlflow_internals

    mlflow_internals.adapt_instance(store, ProxiedLocationTrackingStore)
