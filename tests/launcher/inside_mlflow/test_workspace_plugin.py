"""The workspace adaptations that run inside the MLflow child (launcher/inside_mlflow/workspace_plugin/), piece by piece; the
e2e tests in tests/e2e/test_databricks_mode.py run them in a real child against the stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from launcher.databricks.child_environment import child_app_arguments, child_artifacts_destination
from launcher.inside_mlflow.workspace_plugin.artifacts import UC_MODELS_PREFIX, model_version_download_uri, model_version_path
from launcher.inside_mlflow.workspace_plugin.experiments import adapt_tracking_store, new_experiment_location
from launcher.inside_mlflow.workspace_plugin.registry import name_matcher, ordered, page_of
from launcher.mlflow_process import mlflow_command
from launcher.settings import Settings

WORKSPACE = Settings(backend_store_uri="databricks", registry_store_uri="databricks-uc")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/Volumes/main/default/mlflow-artifacts", "dbfs:/Volumes/main/default/mlflow-artifacts/mlflow"),
        ("/Volumes/main/default/vol/sub", "dbfs:/Volumes/main/default/vol/sub"),
        ("main.default.mlflow-artifacts", "dbfs:/Volumes/main/default/mlflow-artifacts/mlflow"),
        ("dbfs:/Volumes/main/default/v/", "dbfs:/Volumes/main/default/v/mlflow"),
        ("s3://bucket/mlflow", "s3://bucket/mlflow"),
    ],
)
def test_a_volume_becomes_the_uri_mlflow_reaches_through_the_files_api(given, expected):
    settings = Settings(backend_store_uri="databricks", artifacts_destination=given)
    assert child_artifacts_destination(settings) == expected


def test_without_a_workspace_store_a_volume_like_path_stays_a_local_path():
    assert child_artifacts_destination(Settings(artifacts_destination="/Volumes/a/b/c")) == "/Volumes/a/b/c"


def test_the_adaptations_load_only_for_a_workspace_store():
    assert child_app_arguments(Settings()) == []
    assert child_app_arguments(Settings(backend_store_uri="postgresql://db/mlflow")) == []
    command = mlflow_command(WORKSPACE, 5000)
    assert command[-2:] == ["--app-name", "mlflow-app-workspace"]


def test_the_child_finds_the_plugin_without_mlflow_app_being_installed(tmp_path):
    """As on Databricks Apps, where our packages run from the uploaded folder: a Python started
    with the child's PYTHONPATH, from elsewhere, sees the entry point MLflow looks up."""
    import subprocess
    import sys

    from launcher.databricks.child_environment import PROJECT_ROOT, write_child_plugin
    from launcher.mlflow_process import mlflow_environment

    env = mlflow_environment(WORKSPACE, base={"PATH": "/usr/bin:/bin"}, child_plugin=write_child_plugin(tmp_path))
    assert env["PYTHONPATH"].split(":")[1] == str(PROJECT_ROOT)
    probe = (
        "from importlib.metadata import entry_points; import importlib;"
        "(e,) = [e for e in entry_points(group='mlflow.app') if e.name == 'mlflow-app-workspace'];"
        "module, name = e.value.split(':'); print(getattr(importlib.import_module(module), name).__name__)"
    )
    found = subprocess.run([sys.executable, "-S", "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "create_workspace_app", found.stderr


def test_mlflow_artifacts_uris_inside_the_child_name_the_destination_through_the_public_entry_point(tmp_path):
    """`mlflow.artifact_repository` entry point `mlflow-artifacts`, declared by the child's plugin
    dist-info only: with artifacts served they name the destination, otherwise MLflow's own HTTP
    repository stays (as it does in any process without the plugin, users' clients included)."""
    import subprocess
    import sys

    from launcher.databricks.child_environment import write_child_plugin
    from launcher.mlflow_process import mlflow_environment

    destination = tmp_path / "destination"
    probe = (
        "from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository;"
        "repo = get_artifact_repository('mlflow-artifacts:/experiments/e1');"
        "print(type(repo).__name__, repo.artifact_uri)"
    )
    served = {"_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(destination), "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true"}
    plugin = write_child_plugin(tmp_path)
    outputs = []
    for child_plugin, extra in [(plugin, served), (plugin, {}), (None, served)]:
        env = mlflow_environment(WORKSPACE, base={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999", **extra}, child_plugin=child_plugin)
        found = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        outputs.append(found.stdout.strip() or found.stderr)
    assert outputs[0] == f"LocalArtifactRepository {destination}/experiments/e1"
    assert outputs[1].startswith("MlflowArtifactsRepository http://127.0.0.1:5999/api/2.0/mlflow-artifacts/artifacts/experiments/e1")
    assert outputs[2].startswith("MlflowArtifactsRepository ")  # without the plugin's declaration


def test_experiments_created_without_a_location_get_a_served_one():
    created = []

    class WorkspaceStore:
        def create_experiment(self, name, artifact_location=None, tags=None):
            created.append((name, artifact_location, tags))
            return "1"

    store = WorkspaceStore()
    adapt_tracking_store(store)
    store.create_experiment("/Users/a/one")
    store.create_experiment("/Users/a/two", "s3://bucket/own", tags=["t"])
    assert created[0][1].startswith("mlflow-artifacts:/experiments/") and len(created[0][1]) > 40
    assert created[1] == ("/Users/a/two", "s3://bucket/own", ["t"])
    assert isinstance(store, WorkspaceStore)  # MLflow's isinstance checks still hold
    assert new_experiment_location() != new_experiment_location()


def test_model_version_paths():
    assert model_version_download_uri("main.ml.iris", 3) == f"mlflow-artifacts:/{UC_MODELS_PREFIX}/main.ml.iris/3"
    assert model_version_path(f"{UC_MODELS_PREFIX}/main.ml.iris/3") == ("main.ml.iris", "3", "")
    assert model_version_path(f"{UC_MODELS_PREFIX}/main.ml.iris/3/data/model.pkl") == ("main.ml.iris", "3", "data/model.pkl")
    assert model_version_path("experiments/abc/run/artifacts/model") is None
    assert model_version_path("_unity_catalog/modelsX/a.b.c/1") is None
    for bad in (f"{UC_MODELS_PREFIX}/iris/3", f"{UC_MODELS_PREFIX}/a.b.c/latest", f"{UC_MODELS_PREFIX}"):
        with pytest.raises(MlflowException, match="not a model version path"):
            model_version_path(bad)


@pytest.mark.parametrize(
    ("filter_string", "matching"),
    [
        ("name = 'main.ml.iris'", {"main.ml.iris"}),
        ("name != 'main.ml.iris'", {"main.ml.wine", "prod.ml.Iris_v2"}),
        ("name LIKE '%iris%'", {"main.ml.iris"}),
        ("name ILIKE '%iris%'", {"main.ml.iris", "prod.ml.Iris_v2"}),
        ("name ilike 'main.%'", {"main.ml.iris", "main.ml.wine"}),
        ('name = "main.ml.wine"', {"main.ml.wine"}),
        ("name LIKE 'main.ml.____'", {"main.ml.iris", "main.ml.wine"}),
    ],
)
def test_name_filters(filter_string, matching):
    names = {"main.ml.iris", "main.ml.wine", "prod.ml.Iris_v2"}
    assert {n for n in names if name_matcher(filter_string)(n)} == matching


def test_other_filters_are_refused_clearly():
    with pytest.raises(MlflowException, match="name = '…', name LIKE '…' and name ILIKE '…' only"):
        name_matcher("tags.team = 'a'")


def test_ordering_and_paging():
    def version(v, name="m", created=0):
        return SimpleNamespace(name=name, version=str(v), creation_timestamp=created, last_updated_timestamp=created)

    items = [version(2, created=5), version(10, created=1), version(1, created=9)]
    assert [i.version for i in ordered(items, ["version_number DESC"])] == ["10", "2", "1"]
    assert [i.version for i in ordered(items, ["creation_timestamp"])] == ["10", "2", "1"]
    assert [i.version for i in ordered(items, ["unknown_key DESC"])] == ["2", "10", "1"]
    assert [i.version for i in ordered(items, [])] == ["2", "10", "1"]

    first = page_of(list(range(5)), 2, None)
    assert list(first) == [0, 1] and first.token == "offset:2"
    last = page_of(list(range(5)), 2, "offset:4")
    assert list(last) == [4] and last.token is None
    with pytest.raises(MlflowException, match="Invalid page token"):
        page_of([1], 1, "bogus")


def test_uc_search_results_become_versions_the_handler_can_serialise():
    from mlflow.entities.model_registry.model_version_search import ModelVersionSearch

    from launcher.inside_mlflow.workspace_plugin.registry import plain_model_version

    found = ModelVersionSearch(name="main.ml.iris", version="2", creation_timestamp=1, source="models:/m-1")
    with pytest.raises(TypeError):
        found.to_proto()  # MLflow's own entity, as its handler meets it
    proto = plain_model_version(found).to_proto()
    assert (proto.name, proto.version, list(proto.aliases), list(proto.tags)) == ("main.ml.iris", "2", [], [])


def test_the_clients_prompt_exclusion_is_dropped_and_name_conditions_kept():
    from launcher.inside_mlflow.workspace_plugin.registry import name_conditions

    prompt_clause = "tag.`mlflow.prompt.is_prompt` != 'true'"
    assert name_conditions(prompt_clause) == []
    assert name_conditions(f"name LIKE 'main.%' AND {prompt_clause}") == ["name LIKE 'main.%'"]
    assert name_conditions("") == [] and name_conditions(None) == []
    assert name_conditions("name = 'a.b.c' and tags.team = 'x'") == ["name = 'a.b.c'", "tags.team = 'x'"]


def test_writes_into_the_model_space_are_refused_with_403(tmp_path):
    from launcher.inside_mlflow.workspace_plugin.artifacts import ProxiedArtifactRouter

    router = ProxiedArtifactRouter(str(tmp_path))
    upload = tmp_path / "f.txt"
    upload.write_text("x")
    with pytest.raises(MlflowException) as refused:
        router.log_artifact(str(upload), f"{UC_MODELS_PREFIX}/main.ml.iris/1")
    assert refused.value.get_http_status_code() == 403
    router.log_artifact(str(upload), "experiments/e1")  # elsewhere: the destination's own repository
    assert (tmp_path / "experiments" / "e1" / "f.txt").read_text() == "x"
    assert [f.path for f in router.list_artifacts("experiments/e1")] == ["experiments/e1/f.txt"]


def test_the_uis_prompt_version_lookup_is_recognised():
    from launcher.inside_mlflow.workspace_plugin.registry import asks_for_prompts

    ui_filter = "tags.`mlflow.prompt.is_prompt` = 'true' AND tags.`mlflow.prompt.run_ids` ILIKE \"%abc%\""
    assert asks_for_prompts(ui_filter)
    assert not asks_for_prompts("name='main.ml.iris'")
    assert not asks_for_prompts("tag.`mlflow.prompt.is_prompt` != 'true'")
    assert not asks_for_prompts(None)
