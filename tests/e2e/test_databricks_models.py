"""Artifacts and Unity Catalog models for a client that knows only the app's URL, in Databricks mode
against the stand-in workspace (its tracking MLflow, Unity Catalog registry and Files API, all
behind the app's OAuth credentials). The client has no Databricks credentials: every byte it
writes or reads goes through the app, and what lands is checked in the stand-in's own storage.
The last test opens the run and model pages in a real browser."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.test_browser import UI_TIMEOUT_MS, assert_no_error_shown, browser_page

pytestmark = pytest.mark.e2e

SOURCE_MODEL = "main.default.iris"
PROMOTED_MODEL = "prod.ml.iris"


def volume_files(workspace) -> set[str]:
    """Every file in the app's volume, relative to it."""
    root = workspace.files_root / "volumes" / "main" / "default" / "mlflow-artifacts" / "mlflow"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True, as_frame=True)
    return features, labels


@pytest.fixture(scope="module")
def registered(databricks_app, standin_workspace, iris, tmp_path_factory):
    """An sklearn model logged with a signature and registered under a three-level name, through the app."""
    import os

    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("DATABRICKS_")}
    os.environ["MLFLOW_TRACKING_URI"] = databricks_app.url
    try:
        features, labels = iris
        model = LogisticRegression(max_iter=300).fit(features, labels)
        mlflow.set_tracking_uri(databricks_app.url)
        mlflow.set_registry_uri(databricks_app.url)
        mlflow.set_experiment("/Users/e2e/models")
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(features, model.predict(features)),
                registered_model_name=SOURCE_MODEL,
            )  # fmt: skip
        yield run, info, model
    finally:
        # The URIs are process-wide: leave none behind for the other modules' clients.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update(saved)


def test_run_artifacts_go_through_the_app_to_the_volume(client, standin_workspace, tmp_path):
    experiment_id = client.create_experiment("/Users/e2e/artifacts")
    run = client.create_run(experiment_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/experiments/")
    notes = tmp_path / "notes.txt"
    notes.write_text("through the app")
    client.log_artifact(run.info.run_id, str(notes), artifact_path="docs")
    client.log_text(run.info.run_id, "x,y\n1,2\n", "data/table.csv")

    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["data", "docs"]
    downloaded = client.download_artifacts(run.info.run_id, "docs", str(tmp_path / "back"))
    assert open(f"{downloaded}/notes.txt").read() == "through the app"

    experiment_folder = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    landed = {f for f in volume_files(standin_workspace) if f.startswith(experiment_folder)}
    assert landed == {f"{experiment_folder}/docs/notes.txt", f"{experiment_folder}/data/table.csv"}


def files_in(directory) -> set[str]:
    from pathlib import Path

    return {str(p.relative_to(directory)) for p in Path(directory).rglob("*") if p.is_file()}


def test_register_model_lands_in_unity_catalog(registered, client, standin_workspace, tmp_path):
    import mlflow

    run, info, _ = registered
    (version,) = standin_workspace.unity_catalog.model_versions(SOURCE_MODEL)
    assert version.status == "READY" and version.run_id == run.info.run_id
    # The registry store, in the app, copied the logged model's files into Unity Catalog's storage.
    logged = files_in(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path)))
    assert "MLmodel" in logged and files_in(version.storage_dir) == logged

    found = client.search_model_versions(f"name='{SOURCE_MODEL}'")
    assert [(v.name, v.version) for v in found] == [(SOURCE_MODEL, "1")]
    assert SOURCE_MODEL in [m.name for m in client.search_registered_models()]
    assert [m.name for m in client.search_registered_models(filter_string="name LIKE 'main.default.%'")] == [SOURCE_MODEL]


def test_aliases_tags_and_load_by_alias(registered, client, iris):
    _, _, model = registered
    import mlflow

    client.set_registered_model_alias(SOURCE_MODEL, "Champion", "1")
    client.set_model_version_tag(SOURCE_MODEL, "1", "validated", "yes")
    client.set_registered_model_tag(SOURCE_MODEL, "team", "e2e")
    champion = client.get_model_version_by_alias(SOURCE_MODEL, "Champion")
    assert champion.version == "1" and champion.tags["validated"] == "yes"
    assert client.get_registered_model(SOURCE_MODEL).tags["team"] == "e2e"

    loaded = mlflow.pyfunc.load_model(f"models:/{SOURCE_MODEL}@Champion")
    features, _ = iris
    assert np.array_equal(loaded.predict(features.head(20)), model.predict(features.head(20)))


def test_copy_to_another_catalog_and_promote(registered, client, standin_workspace, iris):
    _, _, model = registered
    import mlflow

    client.set_registered_model_alias(SOURCE_MODEL, "Champion", "1")
    copied = client.copy_model_version(f"models:/{SOURCE_MODEL}@Champion", PROMOTED_MODEL)
    client.set_registered_model_alias(PROMOTED_MODEL, "Champion", copied.version)

    (landed,) = standin_workspace.unity_catalog.model_versions(PROMOTED_MODEL)
    (source,) = standin_workspace.unity_catalog.model_versions(SOURCE_MODEL)
    assert landed.status == "READY" and files_in(landed.storage_dir) == files_in(source.storage_dir)
    loaded = mlflow.pyfunc.load_model(f"models:/{PROMOTED_MODEL}@Champion")
    features, _ = iris
    assert np.array_equal(loaded.predict(features.head(5)), model.predict(features.head(5)))


def test_a_model_versions_files_are_read_only_through_the_app(registered, databricks_app):
    import httpx

    path = f"/api/2.0/mlflow-artifacts/artifacts/_unity_catalog/models/{SOURCE_MODEL}/1/MLmodel"
    read = httpx.get(databricks_app.url + path, timeout=60)
    assert read.status_code == 200 and b"flavors" in read.content
    write = httpx.put(databricks_app.url + path, content=b"replaced", timeout=60)
    assert write.status_code == 403 and write.json()["error_code"] == "PERMISSION_DENIED"


# --- the UI ------------------------------------------------------------------------------------


def test_run_and_model_pages(databricks_app, registered):
    run, _, _ = registered
    experiment_id = run.info.experiment_id
    with browser_page(databricks_app, platform_edge=True) as ui:
        # The run page and its artifact view: the logged model, read from the volume through the app.
        ui.open(f"/experiments/{experiment_id}/runs/{run.info.run_id}")
        ui.see(ui.page.get_by_role("heading", name=run.info.run_name))
        assert_no_error_shown(ui)
        with ui.page.expect_response(lambda r: "/artifacts/list" in r.url, timeout=UI_TIMEOUT_MS) as listed:
            ui.page.get_by_role("tab", name="Artifacts").click()
        assert listed.value.status == 200
        assert_no_error_shown(ui)

        # The registry's pages, backed by Unity Catalog through the child's adaptations.
        with ui.page.expect_response(lambda r: "/registered-models/search" in r.url, timeout=UI_TIMEOUT_MS) as searched:
            ui.open("/models")
        assert searched.value.status == 200
        ui.see(ui.page.get_by_role("link", name=SOURCE_MODEL))
        assert_no_error_shown(ui)

        with ui.page.expect_response(lambda r: "/model-versions/search" in r.url, timeout=UI_TIMEOUT_MS) as versions:
            ui.open(f"/models/{SOURCE_MODEL}")
        assert versions.value.status == 200
        ui.see(ui.page.get_by_role("link", name="Version 1"))
        assert_no_error_shown(ui)

        # The version page reads the signature from the version's MLmodel, which the app fetches
        # from Unity Catalog's storage (model-versions/get-artifact), and links the source run.
        with ui.page.expect_response(lambda r: "/model-versions/get-artifact" in r.url, timeout=UI_TIMEOUT_MS) as artifact:
            ui.open(f"/models/{SOURCE_MODEL}/versions/1")
        assert artifact.value.status == 200
        ui.see(ui.page.get_by_role("heading", name="Version 1"))
        ui.see(ui.page.get_by_role("row", name="Inputs (4)"))
        ui.see(ui.page.get_by_role("link", name=run.info.run_name))
        assert_no_error_shown(ui)

        assert ui.traffic.failures == []
        assert ui.traffic.error_answers() == []
        assert ui.traffic.foreign_requests() == []
