"""Experiments created through the app keep their artifacts behind the app.

A workspace gives a new experiment a `dbfs:/databricks/mlflow-tracking/<id>` location, which a
client that knows only the app's URL cannot use: it would need its own workspace credentials.
An experiment created here without a location gets `mlflow-artifacts:/experiments/<uuid>`
instead, the scheme every MLflow client resolves against its tracking server, so its runs'
artifacts (and logged models) go through the app to the artifacts destination (a Unity Catalog
volume on Databricks Apps). A location the caller gives is kept as it is.

A workspace also names every experiment by an absolute workspace path and has no experiment `0`,
where MLflow's clients and UI use plain names (`set_experiment("churn")`, "Create experiment") and
`0` as the default experiment (`mlflow.start_run()` with nothing set). With the launcher's
`--experiment-folder` (in the child's environment, `EXPERIMENT_FOLDER_ENV`), a relative name is
placed in that folder (`churn` is `<folder>/churn`), on create, rename and look-up by name; and `0`
is the experiment `<folder>/Default`, created on first use. Without a folder, both are refused with
a 400 that says to set one. A name that starts with `/` is the workspace's to judge, as it is.
"""

from __future__ import annotations

import uuid

EXPERIMENTS_PREFIX = "experiments"
# The launcher's --experiment-folder, as the child gets it (launcher/databricks/child_environment.py).
EXPERIMENT_FOLDER_ENV = "MLFLOW_APP_EXPERIMENT_FOLDER"
# MLflow's default experiment: what its clients use when none is set; a workspace has no such id.
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"


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


class ExperimentNames:
    """Where a name a client or the UI gives lands in the workspace: relative names in `folder`."""

    def __init__(self, folder: str | None):
        self.folder = folder.rstrip("/") if folder else None

    def full_name(self, name: str) -> str:
        """`name` as a workspace path; raises MLflow's INVALID_PARAMETER_VALUE (400) when it cannot be one."""
        if name.startswith("/"):
            return name
        if not self.folder:
            raise invalid_parameter(
                f"Experiment name '{name}' is not a workspace path, and this app has no experiment folder to put it in: "
                "name the experiment by its absolute path (e.g. /Users/<you>/{name} or /Shared/{name}), or set --experiment-folder "
                "(MLFLOW_APP_EXPERIMENT_FOLDER) on the app.".replace("{name}", name)
            )
        return f"{self.folder}/{name}"

    def default_name(self) -> str:
        """The workspace path of MLflow's default experiment (`0`)."""
        if not self.folder:
            raise invalid_parameter(
                "Experiment 0 (MLflow's default, used when no experiment is set) does not exist in a Databricks workspace, and "
                "this app has no experiment folder to keep one in: set an experiment (mlflow.set_experiment('/Users/<you>/<name>')), "
                "or set --experiment-folder (MLFLOW_APP_EXPERIMENT_FOLDER) on the app."
            )
        return f"{self.folder}/{DEFAULT_EXPERIMENT_NAME}"


def invalid_parameter(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def adapt_experiment_names(store, folder: str | None) -> None:
    """Make `store` (the server's tracking store, a workspace's) place relative experiment names in
    `folder` and serve experiment `0` as `<folder>/Default` (see the module docstring)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    from launcher.inside_mlflow import mlflow_internals

    base = type(store)
    names = ExperimentNames(folder)

    class WorkspaceNamesTrackingStore(base):
        def create_experiment(self, name, artifact_location=None, tags=None):
            return super().create_experiment(names.full_name(name), artifact_location, tags)

        def rename_experiment(self, experiment_id, new_name):
            return super().rename_experiment(self.workspace_experiment_id(experiment_id), names.full_name(new_name))

        def get_experiment_by_name(self, experiment_name):
            return super().get_experiment_by_name(names.full_name(experiment_name))

        def get_experiment(self, experiment_id):
            return super().get_experiment(self.workspace_experiment_id(experiment_id))

        def delete_experiment(self, experiment_id):
            return super().delete_experiment(self.workspace_experiment_id(experiment_id))

        def restore_experiment(self, experiment_id):
            return super().restore_experiment(self.workspace_experiment_id(experiment_id))

        def set_experiment_tag(self, experiment_id, tag):
            return super().set_experiment_tag(self.workspace_experiment_id(experiment_id), tag)

        def delete_experiment_tag(self, experiment_id, key):
            return super().delete_experiment_tag(self.workspace_experiment_id(experiment_id), key)

        def create_run(self, experiment_id, *args, **kwargs):
            return super().create_run(self.workspace_experiment_id(experiment_id), *args, **kwargs)

        def search_runs(self, experiment_ids, *args, **kwargs):
            return super().search_runs([self.workspace_experiment_id(i) for i in experiment_ids], *args, **kwargs)

        def create_logged_model(self, experiment_id, *args, **kwargs):
            return super().create_logged_model(self.workspace_experiment_id(experiment_id), *args, **kwargs)

        def search_logged_models(self, experiment_ids, *args, **kwargs):
            return super().search_logged_models([self.workspace_experiment_id(i) for i in experiment_ids], *args, **kwargs)

        def workspace_experiment_id(self, experiment_id):
            """`experiment_id`, or for `0` the id of `<folder>/Default`, created on first use.

            Looked up on every use rather than kept: another worker may create it, or a user delete it."""
            if str(experiment_id) != DEFAULT_EXPERIMENT_ID:
                return experiment_id
            name = names.default_name()
            if found := super().get_experiment_by_name(name):
                return found.experiment_id
            try:
                return self.create_experiment(name)
            except MlflowException as exc:  # another worker created it first
                if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS) or not (found := super().get_experiment_by_name(name)):
                    raise
                return found.experiment_id

    WorkspaceNamesTrackingStore.__name__ = f"WorkspaceNames{base.__name__}"
    mlflow_internals.adapt_instance(store, WorkspaceNamesTrackingStore)
