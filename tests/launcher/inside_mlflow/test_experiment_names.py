"""Experiment names inside the child (workspace_plugin/experiments.py): relative names go to the
experiment folder, experiment 0 is `<folder>/Default`, and without a folder both are a clear 400."""

from __future__ import annotations

import inspect

import pytest
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from mlflow.store.tracking.rest_store import RestStore

from launcher.inside_mlflow.workspace_plugin.experiments import adapt_experiment_names, adapt_tracking_store

FOLDER = "/Shared/mlflow-app"


class WorkspaceStore:
    """A workspace's tracking store as the adaptation sees it: experiments by absolute name only."""

    def __init__(self):
        self.experiments: dict[str, str] = {}  # name -> id
        self.calls: list[tuple] = []

    def create_experiment(self, name, artifact_location=None, tags=None):
        assert name.startswith("/"), name
        if name in self.experiments:
            raise MlflowException(f"Node named '{name}' already exists", error_code=RESOURCE_ALREADY_EXISTS)
        self.experiments[name] = str(100 + len(self.experiments))
        self.calls.append(("create_experiment", name, artifact_location))
        return self.experiments[name]

    def get_experiment_by_name(self, experiment_name):
        self.calls.append(("get_experiment_by_name", experiment_name))
        found = self.experiments.get(experiment_name)
        return Experiment(found, experiment_name, "mlflow-artifacts:/x", "active") if found else None

    def get_experiment(self, experiment_id):
        self.calls.append(("get_experiment", experiment_id))
        return experiment_id

    def rename_experiment(self, experiment_id, new_name):
        self.calls.append(("rename_experiment", experiment_id, new_name))

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        self.calls.append(("create_run", experiment_id, run_name))

    def search_runs(self, experiment_ids, filter_string, run_view_type, max_results=1000, order_by=None, page_token=None):
        self.calls.append(("search_runs", experiment_ids, filter_string))
        return []


def adapted(folder: str | None = FOLDER) -> WorkspaceStore:
    store = WorkspaceStore()
    adapt_experiment_names(store, folder)
    return store


def test_a_relative_name_goes_to_the_folder_and_a_full_path_stays():
    store = adapted()
    store.create_experiment("churn")
    store.create_experiment("/Users/someone@example.com/churn")
    assert list(store.experiments) == [f"{FOLDER}/churn", "/Users/someone@example.com/churn"]
    assert isinstance(store, WorkspaceStore)  # MLflow's isinstance checks still hold


def test_either_form_of_a_name_finds_the_experiment():
    store = adapted()
    experiment_id = store.create_experiment("churn")
    assert store.get_experiment_by_name("churn").experiment_id == experiment_id
    assert store.get_experiment_by_name(f"{FOLDER}/churn").experiment_id == experiment_id
    assert store.get_experiment_by_name("nothing") is None


def test_a_rename_to_a_relative_name_goes_to_the_folder():
    store = adapted()
    store.rename_experiment("7", "renamed")
    assert store.calls[-1] == ("rename_experiment", "7", f"{FOLDER}/renamed")


def test_experiment_zero_is_the_folders_default_made_once():
    store = adapted()
    store.create_run(experiment_id="0", user_id="u", start_time=1, tags=[], run_name="r")
    default_id = store.experiments[f"{FOLDER}/Default"]
    assert store.calls[-1] == ("create_run", default_id, "r")
    assert store.get_experiment("0") == default_id
    store.search_runs(experiment_ids=["0", "5"], filter_string="", run_view_type=1)
    assert store.calls[-1] == ("search_runs", [default_id, "5"], "")
    assert [c for c in store.calls if c[0] == "create_experiment"] == [("create_experiment", f"{FOLDER}/Default", None)]
    assert store.get_experiment("12") == "12"


def test_the_default_experiment_made_by_another_worker_meanwhile_is_used():
    class RacingStore(WorkspaceStore):
        """Another worker creates the default between our look-up and our create."""

        def __init__(self):
            super().__init__()
            self.experiments[f"{FOLDER}/Default"] = "99"
            self.misses = 1

        def get_experiment_by_name(self, experiment_name):
            if self.misses:
                self.misses -= 1
                return None
            return super().get_experiment_by_name(experiment_name)

    store = RacingStore()
    adapt_experiment_names(store, FOLDER)
    assert store.get_experiment("0") == "99"


def test_the_default_experiment_gets_a_served_location_when_artifacts_are_served():
    store = WorkspaceStore()
    adapt_tracking_store(store)
    adapt_experiment_names(store, FOLDER)
    store.get_experiment("0")
    created = [c for c in store.calls if c[0] == "create_experiment"]
    assert created[0][1] == f"{FOLDER}/Default" and created[0][2].startswith("mlflow-artifacts:/experiments/")


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.create_experiment("churn"),
        lambda store: store.get_experiment_by_name("churn"),
        lambda store: store.rename_experiment("7", "churn"),
        lambda store: store.get_experiment("0"),
        lambda store: store.create_run("0", "u", 1, [], "r"),
    ],
)
def test_without_a_folder_a_relative_name_or_experiment_zero_is_a_clear_400(call):
    store = adapted(None)
    with pytest.raises(MlflowException) as refused:
        call(store)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE" and refused.value.get_http_status_code() == 400
    assert "--experiment-folder (MLFLOW_APP_EXPERIMENT_FOLDER)" in refused.value.message
    assert store.experiments == {}


def test_full_paths_work_without_a_folder():
    store = adapted(None)
    experiment_id = store.create_experiment("/Shared/churn")
    assert store.get_experiment_by_name("/Shared/churn").experiment_id == experiment_id


# The methods the adaptation overrides, with the parameters MLflow's handlers pass them by name.
OVERRIDDEN = {
    "create_experiment": ["name", "artifact_location", "tags"],
    "rename_experiment": ["experiment_id", "new_name"],
    "get_experiment_by_name": ["experiment_name"],
    "get_experiment": ["experiment_id"],
    "delete_experiment": ["experiment_id"],
    "restore_experiment": ["experiment_id"],
    "set_experiment_tag": ["experiment_id", "tag"],
    "delete_experiment_tag": ["experiment_id", "key"],
    "create_run": ["experiment_id", "user_id", "start_time", "tags", "run_name"],
    "search_runs": ["experiment_ids", "filter_string", "run_view_type", "max_results", "order_by", "page_token"],
    "create_logged_model": ["experiment_id", "name", "source_run_id", "tags", "params", "model_type"],
    "search_logged_models": ["experiment_ids", "filter_string", "datasets", "max_results", "order_by", "page_token"],
}


@pytest.mark.parametrize(("method", "parameters"), OVERRIDDEN.items())
def test_the_workspace_stores_methods_take_what_the_adaptation_passes_on(method, parameters):
    # The first parameter is passed positionally, the rest as MLflow's handlers gave them.
    assert list(inspect.signature(getattr(RestStore, method)).parameters)[1:] == parameters
