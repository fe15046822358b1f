"""Unity Catalog model files when the workspace answers false to
`is-databricks-sdk-models-artifact-repository-enabled`: MLflow asks for temporary credentials and
moves the files with presigned URLs (default storage) or a cloud SDK (customer-hosted storage).

One real-client process registers and loads a model in each storage mode against a stand-in without
MLflow (catalogs with storage of their own: `main` default storage, `ext` a customer's S3 bucket on a
local S3 server, `az` and `gcs` customer-hosted storage this install has no SDK for) and reports what
it saw; the stand-in's own rules are plain HTTP calls.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.app_process import QUIET_ENV
from tests.standin.cloud_storage import CustomerAzure, CustomerGcs, CustomerS3, S3Server, model_files_branch
from tests.standin.workspace import StandinWorkspace

UC = "/api/2.0/mlflow/unity-catalog"

CLIENT = textwrap.dedent(
    """
    import hashlib, json, os, pathlib
    import numpy as np
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input * 2

    def digests(directory):
        root = pathlib.Path(directory)
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}

    x = np.array([[1.0, 2.0]])
    mlflow.pyfunc.save_model("model", python_model=Doubler(), signature=infer_signature(x, x * 2), pip_requirements=["mlflow"])
    client = MlflowClient(registry_uri="databricks-uc")
    report = {"saved": digests("model")}
    for catalog in ("main", "ext", "az", "gcs"):
        name = f"{catalog}.default.doubler"
        client.create_registered_model(name)
        try:
            version = client.create_model_version(name, source=os.path.abspath("model"), run_id="run-1")
        except MlflowException as e:
            report[catalog] = {"error": {"code": e.error_code, "message": e.message}}
            continue
        client.set_registered_model_alias(name, "Champion", version.version)
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@Champion")
        back = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=f"back-{catalog}")
        report[catalog] = {"status": version.status, "prediction": loaded.predict(x).tolist(), "downloaded": digests(back)}
    print("REPORT " + json.dumps(report))
    """
)


def recorded(workspace, method: str, prefix: str):
    return [r for r in workspace.requests if r.method == method and r.path.startswith(prefix)]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A stand-in without MLflow (UC and files need none), answering false to the SDK-repository check."""
    with StandinWorkspace(tmp_path_factory.mktemp("uc-files-workspace"), with_mlflow=False) as running:
        yield running


@pytest.fixture(scope="module")
def storages(s3_server):
    return {"ext": CustomerS3(s3_server.url), "az": CustomerAzure(), "gcs": CustomerGcs()}


@pytest.fixture(scope="module")
def report(workspace, storages, s3_server, tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("uc-files-client")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_", "AWS_"))},
        **QUIET_ENV,
        **workspace.oauth_env(),
        "MLFLOW_TRACKING_URI": "databricks",
        "MLFLOW_REGISTRY_URI": "databricks-uc",
        "MLFLOW_S3_ENDPOINT_URL": s3_server.url,  # the customer's bucket is on the local S3 server
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with model_files_branch(workspace.unity_catalog, sdk_repository=False):
        workspace.unity_catalog.catalog_storage.update(storages)
        done = subprocess.run([sys.executable, "-c", CLIENT], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("REPORT ")) | {"stderr": done.stderr}


def test_default_storage_moves_files_through_presigned_urls(workspace, report):
    assert report["main"]["status"] == "READY"
    assert report["main"]["prediction"] == [[2.0, 4.0]]
    # Byte for byte, and in the stand-in's storage for the version, not anywhere else.
    (version,) = workspace.unity_catalog.model_versions("main.default.doubler")
    landed = {str(p.relative_to(version.storage_dir)) for p in version.storage_dir.rglob("*") if p.is_file()}
    assert landed == set(report["saved"])
    assert {k: v for k, v in report["main"]["downloaded"].items() if k in report["saved"]} == report["saved"]
    # What MLflow called: credentials, one upload URL per file and its PUT, listing and download URLs;
    # never the Files API's own upload.
    credentials = recorded(workspace, "POST", f"{UC}/model-versions/generate-temporary-credentials")
    assert credentials and all(r.status == 200 for r in credentials)
    uploads = recorded(workspace, "POST", "/api/2.0/fs/create-upload-url")
    assert len(uploads) >= len(report["saved"]) and all(r.status == 200 for r in uploads)
    puts = recorded(workspace, "PUT", "/standin-cloud-storage/")
    assert len(puts) == len(uploads) and all(r.status == 200 and r.credential == "presigned" for r in puts)
    assert recorded(workspace, "POST", "/api/2.0/fs/create-download-url")
    assert recorded(workspace, "GET", "/api/2.0/fs/directories/Models/main/default/doubler/1")
    assert not recorded(workspace, "PUT", "/api/2.0/fs/files/Models/")


def test_customer_s3_moves_files_with_the_temporary_aws_credentials(workspace, storages, report):
    assert report["ext"]["status"] == "READY"
    assert report["ext"]["prediction"] == [[2.0, 4.0]]
    (version,) = workspace.unity_catalog.model_versions("ext.default.doubler")
    assert version.storage_location.startswith("s3://standin-uc-customer/")
    import hashlib

    in_bucket = {key: hashlib.sha256(body).hexdigest() for key, body in storages["ext"].objects(version.storage_location).items()}
    assert in_bucket == report["saved"]
    assert not any(version.storage_dir.iterdir())  # nothing through the workspace's own storage
    assert {k: v for k, v in report["ext"]["downloaded"].items() if k in report["saved"]} == report["saved"]


@pytest.mark.parametrize("catalog", ["az", "gcs"])
def test_customer_azure_and_gcs_need_their_sdk(workspace, storages, report, catalog):
    # MLflow's own words: the client process has neither SDK installed.
    error = report[catalog]["error"]
    assert "Unable to import necessary dependencies" in error["message"]
    (version,) = workspace.unity_catalog.model_versions(f"{catalog}.default.doubler")
    assert version.status == "PENDING_REGISTRATION"
    assert not any(secret in report["stderr"] or secret in error["message"] for secret in storages[catalog].secrets())


# -- the stand-in's rules, plain HTTP ---------------------------------------------------------


@pytest.fixture(scope="module")
def http(workspace) -> httpx.Client:
    token = httpx.post(f"{workspace.url}/oidc/v1/token", data={"grant_type": "client_credentials"}, auth=(workspace.client_id, workspace.client_secret)).json()
    with httpx.Client(base_url=workspace.url, headers={"Authorization": f"Bearer {token['access_token']}"}, trust_env=False) as client:
        yield client


def pending_version(http, name: str) -> None:
    assert http.post(f"{UC}/registered-models/create", json={"name": name}).status_code == 200
    assert http.post(f"{UC}/model-versions/create", json={"name": name, "source": "s3://x"}).status_code == 200


def credentials(http, name: str, operation: str) -> httpx.Response:
    return http.post(f"{UC}/model-versions/generate-temporary-credentials", json={"name": name, "version": "1", "operation": f"MODEL_VERSION_OPERATION_{operation}"})


def test_the_sdk_repository_check_answers_what_the_test_set(http, workspace):
    check = f"{UC}/registered-models:is-databricks-sdk-models-artifact-repository-enabled"
    with model_files_branch(workspace.unity_catalog, sdk_repository=False):
        assert http.get(check).json() == {"is_databricks_sdk_models_artifact_repository_enabled": False}
    assert http.get(check).json() == {"is_databricks_sdk_models_artifact_repository_enabled": True}


def test_presigned_uploads_only_while_the_version_is_pending(http, workspace):
    pending_version(http, "c.s.presigned")
    path = "/Models/c/s/presigned/1/MLmodel"
    issued = http.post("/api/2.0/fs/create-upload-url", json={"path": path})
    assert issued.status_code == 200, issued.text
    url, headers = issued.json()["url"], {h["name"]: h["value"] for h in issued.json()["headers"]}
    assert httpx.put(url, content=b"unsigned", trust_env=False).status_code == 403  # without the signed header
    assert httpx.put(url, content=b"first", headers=headers, trust_env=False).status_code == 200  # no bearer: the URL is the grant
    stored = workspace.unity_catalog.model_versions("c.s.presigned")[0].storage_dir / "MLmodel"
    assert stored.read_bytes() == b"first"

    assert http.post(f"{UC}/model-versions/finalize", json={"name": "c.s.presigned", "version": "1"}).status_code == 200
    assert httpx.put(url, content=b"changed", headers=headers, trust_env=False).status_code == 403  # issued before, used after
    assert http.post("/api/2.0/fs/create-upload-url", json={"path": path}).status_code == 403
    assert stored.read_bytes() == b"first"


def test_download_urls_take_a_json_body_and_check_signature_and_expiry(http, workspace):
    pending_version(http, "c.s.download")
    assert http.put("/api/2.0/fs/files/Models/c/s/download/1/model.pkl", content=b"weights").status_code == 204
    assert http.put("/api/2.0/fs/files/Models/c/s/download/1/other.pkl", content=b"other").status_code == 204
    answer = http.post("/api/2.0/fs/create-download-url", json={"path": "/Models/c/s/download/1/model.pkl"})
    assert answer.status_code == 200, answer.text  # MLflow sends the path in a JSON body
    url = answer.json()["url"]
    assert httpx.get(url, trust_env=False).content == b"weights"

    # The same signature on another path (a forged grant) is refused, as is a tampered signature.
    prefix, _, token = url.rpartition("/")
    payload, _, signature = token.rpartition(".")
    grant = json.loads(base64.urlsafe_b64decode(payload)) | {"path": "/Models/c/s/download/1/other.pkl"}
    forged = base64.urlsafe_b64encode(json.dumps(grant).encode()).decode()
    assert httpx.get(f"{prefix}/{forged}.{signature}", trust_env=False).status_code == 403
    assert httpx.get(url[:-4] + "0000", trust_env=False).status_code == 403

    workspace.files.presigned_ttl_seconds = -1
    try:
        expired = http.post("/api/2.0/fs/create-download-url", json={"path": "/Models/c/s/download/1/model.pkl"}).json()["url"]
    finally:
        workspace.files.presigned_ttl_seconds = 3600
    assert httpx.get(expired, trust_env=False).status_code == 403


def test_temporary_credentials_by_storage_mode(http, workspace, storages):
    pending_version(http, "c.s.modes")
    assert credentials(http, "c.s.modes", "READ_WRITE").json()["credentials"]["storage_mode"] == "DEFAULT_STORAGE"
    with model_files_branch(workspace.unity_catalog, sdk_repository=False, storage=storages["ext"], catalog="s3cat"):
        pending_version(http, "s3cat.s.modes")
        version = http.get(f"{UC}/model-versions/get", params={"name": "s3cat.s.modes", "version": "1"}).json()["model_version"]
        assert version["storage_location"].startswith("s3://standin-uc-customer/")
        given = credentials(http, "s3cat.s.modes", "READ_WRITE").json()["credentials"]
        assert given["storage_mode"] == "CUSTOMER_HOSTED"
        assert given["aws_temp_credentials"]["secret_access_key"] == storages["ext"].secret_access_key
        assert given["expiration_time"] > 0
        http.post(f"{UC}/model-versions/finalize", json={"name": "s3cat.s.modes", "version": "1"})
        assert credentials(http, "s3cat.s.modes", "READ").status_code == 200  # READ after finalize
        assert credentials(http, "s3cat.s.modes", "READ_WRITE").status_code == 403  # READ_WRITE no longer
    assert "s3cat" not in workspace.unity_catalog.catalog_storage  # restored for the next test
    with model_files_branch(workspace.unity_catalog, sdk_repository=False, storage=storages["az"]):
        assert "azure_user_delegation_sas" in credentials(http, "c.s.modes", "READ").json()["credentials"]
    with model_files_branch(workspace.unity_catalog, sdk_repository=False, storage=storages["gcs"]):
        assert "gcp_oauth_token" in credentials(http, "c.s.modes", "READ").json()["credentials"]
    assert credentials(http, "c.s.modes", "READ").json()["credentials"]["storage_mode"] == "DEFAULT_STORAGE"
