"""Artifacts over HTTP and the model registry, through the app, with the real mlflow client."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_artifacts_travel_over_http(tracking, app, tmp_path):
    import mlflow

    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "a.txt").write_text("alpha")
    (source / "nested" / "b.bin").write_bytes(bytes(range(256)) * 64)
    single = tmp_path / "single.csv"
    single.write_text("x,y\n1,2\n")

    experiment_id = tracking.create_experiment(unique("artifacts"))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(str(single))
        mlflow.log_artifacts(str(source), artifact_path="dir")
        mlflow.log_text("hello from the client", "notes/readme.txt")
        mlflow.log_dict({"k": [1, 2, 3]}, "config.json")

    # The client only knows the app's URL: artifacts are addressed through the server.
    assert tracking.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")

    top = {f.path for f in tracking.list_artifacts(run.info.run_id)}
    assert top == {"single.csv", "dir", "notes", "config.json"}
    assert {f.path for f in tracking.list_artifacts(run.info.run_id, "dir")} == {"dir/a.txt", "dir/nested"}

    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "down")))
    assert (downloaded / "single.csv").read_text() == "x,y\n1,2\n"
    assert (downloaded / "dir" / "nested" / "b.bin").read_bytes() == bytes(range(256)) * 64
    assert (downloaded / "notes" / "readme.txt").read_text() == "hello from the client"
    assert json.loads((downloaded / "config.json").read_text()) == {"k": [1, 2, 3]}
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/dir/a.txt") == "alpha"

    # ...and they landed in the server's own artifact store, under its data directory.
    stored = list((app.workdir / "data" / "artifacts").rglob("readme.txt"))
    assert [p.read_text() for p in stored] == ["hello from the client"]


@pytest.fixture(scope="module")
def iris_model():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    return model, features


def test_model_registry_workflow(tracking, iris_model):
    import mlflow
    from mlflow.models import infer_signature

    model, features = iris_model
    name = unique("iris")
    experiment_id = tracking.create_experiment(unique("models"))
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features)),
            input_example=features.head(3),
        )

    version = mlflow.register_model(info.model_uri, name)
    assert version.version == "1"
    tracking.update_registered_model(name, description="iris classifier")
    tracking.set_registered_model_tag(name, "owner", "ml-team")
    tracking.update_model_version(name, "1", description="first")
    tracking.set_model_version_tag(name, "1", "validated", "yes")
    tracking.set_registered_model_alias(name, "champion", "1")

    registered = tracking.get_registered_model(name)
    assert registered.description == "iris classifier"
    assert registered.tags == {"owner": "ml-team"}
    assert registered.aliases == {"champion": "1"}
    v1 = tracking.get_model_version(name, "1")
    assert (v1.description, v1.tags) == ("first", {"validated": "yes"})
    assert tracking.get_model_version_by_alias(name, "champion").version == "1"
    assert [v.version for v in tracking.search_model_versions(f"name = '{name}'")] == ["1"]
    assert name in {m.name for m in tracking.search_registered_models(filter_string=f"name = '{name}'")}

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(loaded.predict(features.head(5))) == list(model.predict(features.head(5)))
    assert list(mlflow.sklearn.load_model(f"models:/{name}/1").predict(features.head(5))) == list(model.predict(features.head(5)))

    copied_name = unique("iris-prod")
    copied = tracking.copy_model_version(f"models:/{name}@champion", copied_name)
    assert copied.name == copied_name and copied.version == "1"
    tracking.set_registered_model_alias(copied_name, "Champion", copied.version)
    promoted = mlflow.pyfunc.load_model(f"models:/{copied_name}@Champion")
    assert list(promoted.predict(features.head(3))) == list(model.predict(features.head(3)))

    tracking.delete_registered_model_alias(name, "champion")
    tracking.delete_model_version(name, "1")
    assert tracking.search_model_versions(f"name = '{name}'") == []
    tracking.delete_registered_model(name)
    assert tracking.search_registered_models(filter_string=f"name = '{name}'") == []
