"""Unity Catalog model files on every path a workspace may choose, through the app in Databricks mode.

The workspace's answer to `is-databricks-sdk-models-artifact-repository-enabled` decides how MLflow
inside the app moves a model version's files: true, the Files API (`/Models/…`); false, temporary
credentials, then presigned URLs for default storage or a cloud SDK for a customer's storage. For each,
a client that knows only the app's URL registers an sklearn model (`log_model(registered_model_name=…)`),
loads it by alias and reads it as the UI does (`model-versions/get-artifact`); the files must land
where the stand-in says, byte for byte. A customer's S3 bucket is a real S3 server on 127.0.0.1
(moto), for which the app runs with boto3 (the `s3` extra); Azure and GCS storage, whose SDKs the
app does not carry, must give an error naming the package, fast, with no credential in it.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.app_process import AppProcess
from tests.e2e.conftest import platform_env, running_databricks_app
from tests.standin.cloud_storage import CustomerAzure, CustomerGcs, CustomerS3, S3Server, model_files_branch

pytestmark = pytest.mark.e2e

UC = "/api/2.0/mlflow/unity-catalog"


def digests(directory) -> dict[str, str]:
    root = Path(directory)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True, as_frame=True)
    return features, LogisticRegression(max_iter=300).fit(features, labels)


@contextmanager
def through(app: AppProcess):
    """The process's mlflow client pointed at the app, with no Databricks credentials of its own."""
    import mlflow

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("DATABRICKS_")}
    os.environ["MLFLOW_TRACKING_URI"] = app.url
    mlflow.set_tracking_uri(app.url)
    mlflow.set_registry_uri(app.url)
    try:
        yield mlflow.MlflowClient(app.url, app.url)
    finally:
        # The URIs are process-wide: leave none behind for the other modules' clients.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update(saved)


def log_and_register(iris, name: str | None):
    import mlflow
    from mlflow.models import infer_signature

    features, model = iris
    mlflow.set_experiment("/Shared/e2e-model-files")  # /Shared exists in every workspace
    with mlflow.start_run():
        # pip_requirements given: inferring them exports this checkout's whole lock (seconds, and beside the point).
        return mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(features, model.predict(features)),
            pip_requirements=["mlflow", "scikit-learn"], registered_model_name=name,
        )  # fmt: skip


def calls_since(workspace, mark: int) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in workspace.requests[mark:]]


def check_round_trip(app: AppProcess, client, iris, name: str, stored: dict[str, str], tmp_path) -> None:
    """Load by alias and download through the app: the bytes the workspace holds, and the model's predictions."""
    import mlflow

    features, model = iris
    client.set_registered_model_alias(name, "Champion", "1")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@Champion")
    assert np.array_equal(loaded.predict(features.head(20)), model.predict(features.head(20)))
    back = digests(mlflow.artifacts.download_artifacts(f"models:/{name}@Champion", dst_path=str(tmp_path / "back")))
    # MLflow rewrites registered_model_meta on every models:/ download (name, version); the rest is as stored.
    assert {k: v for k, v in back.items() if k != "registered_model_meta"} == {k: v for k, v in stored.items() if k != "registered_model_meta"}
    # The UI's version page reads MLmodel this way.
    shown = httpx.get(f"{app.url}/model-versions/get-artifact", params={"name": name, "version": "1", "path": "MLmodel"}, timeout=60)
    assert shown.status_code == 200 and hashlib.sha256(shown.content).hexdigest() == stored["MLmodel"]


# -- default storage, on both branches of the flag ------------------------------------------------


@pytest.mark.parametrize("branch", ["files_api", "presigned_urls"])
def test_register_and_load_on_each_branch_of_the_flag(branch, databricks_app, standin_workspace, iris, tmp_path):
    name = f"main.model_files_e2e.iris_{branch}"  # a schema of its own: test_databricks_models.py lists main.default
    uses_sdk_repository = branch == "files_api"
    with model_files_branch(standin_workspace.unity_catalog, sdk_repository=uses_sdk_repository), through(databricks_app) as client:
        mark = len(standin_workspace.requests)
        info = log_and_register(iris, name)
        registration = calls_since(standin_workspace, mark)

        (version,) = standin_workspace.unity_catalog.model_versions(name)
        assert version.status == "READY"
        stored = digests(version.storage_dir)
        logged = digests(__import__("mlflow").artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "logged")))
        assert "MLmodel" in stored and stored == logged  # the app copied the logged model, byte for byte

        mark = len(standin_workspace.requests)
        check_round_trip(databricks_app, client, iris, name, stored, tmp_path)
        loading = calls_since(standin_workspace, mark)

    credentials = [c for c in registration + loading if c[1] == f"{UC}/model-versions/generate-temporary-credentials"]
    files_api_puts = [c for c in registration if c[0] == "PUT" and c[1].startswith("/api/2.0/fs/files/Models/")]
    presigned_puts = [c for c in registration if c[0] == "PUT" and c[1].startswith("/standin-cloud-storage/")]
    upload_urls = [c for c in registration if c[1] == "/api/2.0/fs/create-upload-url"]
    # A 404 on a directory is how both repositories learn that a path is a file (HEAD from the SDK, GET from MLflow).
    transfers = [c for c in registration + loading if c[1].startswith(("/api/2.0/fs/", "/standin-cloud-storage/", f"{UC}/model-versions/generate"))]
    transfers = [c for c in transfers if not (c[1].startswith("/api/2.0/fs/directories/") and c[2] == 404)]
    assert all(status < 400 for _, _, status in transfers), transfers
    if uses_sdk_repository:
        assert len(files_api_puts) == len(stored) and not upload_urls and not credentials
    else:
        assert not files_api_puts and len(upload_urls) == len(presigned_puts) == len(stored)
        assert credentials  # READ_WRITE to register, READ to load
        assert [c for c in loading if c[1] == "/api/2.0/fs/create-download-url"]
        assert [c for c in loading if c[0] == "GET" and c[1].startswith("/standin-cloud-storage/")]


# -- a customer's S3 bucket, with boto3 -----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("customer-s3")) as server:
        yield server


@pytest.fixture(scope="module")
def s3_app(tmp_path_factory, standin_workspace, s3_server) -> AppProcess:
    """A second app against the same stand-in, reaching the customer's bucket at the local S3 server
    (MLflow's S3 code reads MLFLOW_S3_ENDPOINT_URL; on a workspace boto3 finds AWS itself)."""
    env = platform_env(standin_workspace, MLFLOW_S3_ENDPOINT_URL=s3_server.url, AWS_EC2_METADATA_DISABLED="true")
    with running_databricks_app(tmp_path_factory.mktemp("databricks-app-s3"), env) as app:
        yield app


def test_customer_s3_storage_through_boto3(s3_app, s3_server, standin_workspace, iris, tmp_path):
    name = "ext.default.iris"
    bucket = CustomerS3(s3_server.url)
    with model_files_branch(standin_workspace.unity_catalog, sdk_repository=False, storage=bucket, catalog="ext"), through(s3_app) as client:
        info = log_and_register(iris, name)
        (version,) = standin_workspace.unity_catalog.model_versions(name)
        assert version.status == "READY" and version.storage_location.startswith(f"s3://{bucket.bucket}/")
        stored = {key: hashlib.sha256(body).hexdigest() for key, body in bucket.objects(version.storage_location).items()}
        logged = digests(__import__("mlflow").artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "logged")))
        assert "MLmodel" in stored and stored == logged
        assert not any(version.storage_dir.iterdir())  # in the bucket, not in the workspace's storage
        check_round_trip(s3_app, client, iris, name, stored, tmp_path)
    log = s3_app.log_text()
    assert not any(secret in log for secret in bucket.secrets())


# -- customer storage whose SDK the app lacks ----------------------------------------------------


@pytest.mark.parametrize(("catalog", "storage", "package"), [("azure", CustomerAzure(), "azure-storage-file-datalake"), ("gcs", CustomerGcs(), "google-cloud-storage")])
def test_customer_storage_without_its_sdk_names_the_package(catalog, storage, package, databricks_app, standin_workspace, iris):
    from mlflow.exceptions import MlflowException

    name = f"{catalog}.default.iris"
    with model_files_branch(standin_workspace.unity_catalog, sdk_repository=False, storage=storage, catalog=catalog), through(databricks_app):
        import mlflow

        info = log_and_register(iris, None)
        started = time.monotonic()
        with pytest.raises(MlflowException) as raised:
            mlflow.register_model(info.model_uri, name)
        took = time.monotonic() - started
        # The version exists but never got its files, as on a workspace.
        (pending,) = standin_workspace.unity_catalog.model_versions(name)
        assert pending.status == "PENDING_REGISTRATION"

        # A version already in that storage (registered elsewhere): the UI's read names the package too.
        registry = standin_workspace.unity_catalog
        registry.create_model_version({"name": name, "source": "s3://elsewhere"}, "someone")
        registry.finalize_model_version({"name": name, "version": "2"}, "someone")
        shown = httpx.get(f"{databricks_app.url}/model-versions/get-artifact", params={"name": name, "version": "2", "path": "MLmodel"}, timeout=60)

    error = raised.value
    assert error.error_code == "NOT_IMPLEMENTED" and package in error.message, error.message
    assert took < 30  # answered once: a 500 would be retried by the client for minutes
    assert shown.status_code == 501 and shown.json()["error_code"] == "NOT_IMPLEMENTED" and package in shown.json()["message"]
    assert not any(secret in error.message or secret in shown.text or secret in databricks_app.log_text() for secret in storage.secrets())
