"""The MLflow internals that code inside the child relies on (launcher/inside_mlflow/mlflow_internals.py)
are there with the shape relied on, and another MLflow release is refused in one line.

A failure here after an MLflow upgrade means reading the named MLflow code again before moving
TESTED_MLFLOW on."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re

import pytest

from launcher.client.mlflow_release import TESTED_MLFLOW
from launcher.inside_mlflow import mlflow_internals
from launcher.inside_mlflow.mlflow_internals import UntestedMlflow


def parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def test_the_installed_mlflow_is_a_tested_release():
    installed = importlib.metadata.version("mlflow")
    assert ".".join(installed.split(".")[:2]) in TESTED_MLFLOW, f"MLflow {installed}: read the internals below again, then add it to TESTED_MLFLOW"


def test_another_mlflow_release_is_refused_at_import_in_one_line(monkeypatch):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.99.0" if name == "mlflow" else real_version(name))
    try:
        with pytest.raises(ImportError) as refused:  # the class is made anew by the reload
            importlib.reload(mlflow_internals)
    finally:
        monkeypatch.undo()
        importlib.reload(mlflow_internals)
    message = str(refused.value)
    assert "\n" not in message and type(refused.value).__name__ == UntestedMlflow.__name__
    assert message == (
        "mlflow-app's MLflow server plugin and schema migration were tested with MLflow 3.17; installed: 3.99.0. Install mlflow==3.17.* or an mlflow-app release made for 3.99.0."
    )


def test_the_version_check_compares_major_and_minor():
    assert mlflow_internals.untested_mlflow("3.17.0") is None and mlflow_internals.untested_mlflow("3.17.9rc1") is None
    assert mlflow_internals.untested_mlflow("3.18.0") and mlflow_internals.untested_mlflow("3.1.7")
    assert "installed: none" in mlflow_internals.untested_mlflow(None)


def test_the_server_handlers_hold_the_stores_and_the_artifact_repository():
    import mlflow.server
    from mlflow.server import handlers

    assert parameters(handlers._get_tracking_store) == ["backend_store_uri", "default_artifact_root"]
    assert parameters(handlers._get_model_registry_store) == ["registry_store_uri"]
    assert hasattr(handlers, "_artifact_repo") and hasattr(handlers, "_tracking_store") and hasattr(handlers, "_model_registry_store")
    # The server's mlflow-artifacts routes build their repository only while the global is None.
    source = inspect.getsource(handlers._get_artifact_repo_mlflow_artifacts)
    assert "global _artifact_repo" in source and "if _artifact_repo is None" in source
    assert (mlflow.server.ARTIFACTS_DESTINATION_ENV_VAR, mlflow.server.SERVE_ARTIFACTS_ENV_VAR) == ("_MLFLOW_SERVER_ARTIFACT_DESTINATION", "_MLFLOW_SERVER_SERVE_ARTIFACTS")


def test_serve_artifacts_from_replaces_the_servers_repository(monkeypatch):
    from mlflow.server import handlers

    monkeypatch.setattr(handlers, "_artifact_repo", None)
    repository = object()
    mlflow_internals.serve_artifacts_from(repository)
    assert handlers._get_artifact_repo_mlflow_artifacts() is repository


def test_the_served_destination_comes_from_the_servers_environment(monkeypatch):
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", "dbfs:/Volumes/c/s/v/mlflow")
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
    assert mlflow_internals.served_artifacts_destination() == "dbfs:/Volumes/c/s/v/mlflow"
    monkeypatch.delenv("_MLFLOW_SERVER_SERVE_ARTIFACTS")
    assert mlflow_internals.served_artifacts_destination() is None


def test_the_unity_catalog_registry_store_has_the_methods_the_plugin_overrides():
    from mlflow.store._unity_catalog.registry.rest_store import UcModelRegistryStore

    for method, expected in mlflow_internals.REGISTRY_METHODS.items():
        assert parameters(getattr(UcModelRegistryStore, method)) == list(expected), method
    store = UcModelRegistryStore.__new__(UcModelRegistryStore)
    assert mlflow_internals.is_unity_catalog_registry_store(store)
    assert not mlflow_internals.is_unity_catalog_registry_store(object())


def test_the_stores_can_change_class_on_the_instance():
    from mlflow.store._unity_catalog.registry.rest_store import UcModelRegistryStore
    from mlflow.store.tracking.databricks_rest_store import DatabricksTracingRestStore

    assert parameters(DatabricksTracingRestStore.create_experiment) == ["name", "artifact_location", "tags"]
    for base in (DatabricksTracingRestStore, UcModelRegistryStore):
        instance = base.__new__(base)
        adapted = type(f"Adapted{base.__name__}", (base,), {})
        mlflow_internals.adapt_instance(instance, adapted)
        assert type(instance) is adapted and isinstance(instance, base)
        assert type(base.__new__(base)) is base  # other instances stay as they are
    with pytest.raises(TypeError, match="not a subclass"):
        mlflow_internals.adapt_instance(UcModelRegistryStore.__new__(UcModelRegistryStore), type("Other", (), {}))


def test_a_uc_search_result_shares_a_model_versions_state():
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.entities.model_registry.model_version_search import ModelVersionSearch

    assert ModelVersionSearch.__mro__[1] is ModelVersion
    found = ModelVersionSearch(name="main.ml.iris", version="2", creation_timestamp=1, source="models:/m-1")
    plain = ModelVersion(name="main.ml.iris", version="2", creation_timestamp=1, source="models:/m-1")
    assert vars(found) == vars(plain)  # no state of its own: its tags and aliases are methods that raise
    converted = mlflow_internals.as_model_version(found)
    assert type(converted) is ModelVersion and converted.to_proto() == plain.to_proto()


def test_the_db_utils_the_migration_runs_are_there():
    from mlflow.store.db import utils

    expected = {
        "_all_tables_exist": ["engine"],
        "_initialize_tables": ["engine"],
        "_get_latest_schema_revision": [],
        "_get_schema_version": ["engine"],
        "_get_alembic_config": ["db_url", "alembic_dir"],
        "_upgrade_db": ["engine"],
    }
    assert set(expected) == set(mlflow_internals.DB_UTILS)
    for name, params in expected.items():
        assert parameters(getattr(utils, name)) == params, name


def test_the_migration_files_show_the_head_alembic_knows():
    files = mlflow_internals.migration_files()
    assert len(files) > 50
    for path in files:
        text = path.read_text()
        if path.name != "__init__.py":
            assert re.search(r"^revision\s*=\s*[\"']\w+[\"']", text, re.MULTILINE), path.name
            assert re.search(r"^down_revision\s*=", text, re.MULTILINE), path.name
    head = mlflow_internals.schema_head()
    assert head is not None and head == mlflow_internals.latest_schema_revision()
    assert mlflow_internals.knows_revision(head) and not mlflow_internals.knows_revision("ffffffffffff")
    assert not mlflow_internals.knows_revision(None)


UNTESTED_PROBE = "import importlib.metadata as m; real = m.version; m.version = lambda name: '3.99.0' if name == 'mlflow' else real(name);"


def run_probe(code: str, **env: str):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", UNTESTED_PROBE + code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_on_another_mlflow_the_migration_says_so_in_one_line_before_connecting():
    run = run_probe(
        "import sys; from launcher.inside_mlflow.migrate_database import main; sys.exit(main())",
        MLFLOW_APP_DATABASE_URI="postgresql://nobody@127.0.0.1:1/none",
    )
    assert run.returncode == 1 and run.stdout.splitlines() == [
        "ERROR database: mlflow-app's MLflow server plugin and schema migration were tested with MLflow 3.17; installed: 3.99.0. "
        "Install mlflow==3.17.* or an mlflow-app release made for 3.99.0."
    ]


def test_on_another_mlflow_the_workspace_plugin_stops_the_worker_with_that_line():
    run = run_probe(
        "import logging; logging.basicConfig(format='%(levelname)s %(message)s');from launcher.inside_mlflow.workspace_plugin.plugin import create_workspace_app; create_workspace_app()"
    )
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "ERROR mlflow-app's MLflow server plugin and schema migration were tested with MLflow 3.17; installed: 3.99.0. Install mlflow==3.17.* or an mlflow-app release made for 3.99.0."
    )
