"""The stand-in's Unity Catalog registry and Files API, driven by the real MLflow client.

One client process (MLflow caches workspace clients per process, and importing it costs seconds)
runs the whole user story against a stand-in with its MLflow and reports what it saw as JSON; the
tests check that report and what landed in the stand-in. The refusals are plain HTTP calls to a
stand-in without MLflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.app_process import QUIET_ENV
from tests.standin.workspace import StandinWorkspace

CLIENT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input * 2

    report = {}
    x = np.array([[1.0, 2.0]])
    # pip_requirements: no inference of the environment (seconds, and it reads the cwd's project).
    mlflow.pyfunc.save_model("model", python_model=Doubler(), signature=infer_signature(x, x * 2), pip_requirements=["mlflow"])
    client = MlflowClient(registry_uri="databricks-uc")
    report["store"] = type(client._get_registry_client().store).__name__

    def error_of(call):
        try:
            call()
        except MlflowException as e:
            return {"code": e.error_code, "message": e.message}

    client.create_registered_model("main.default.iris", tags={"team": "ml"}, description="Iris classifier")
    v1 = client.create_model_version("main.default.iris", source=os.path.abspath("model"), run_id="run-1",
                                     tags={"stage": "candidate"})
    # What log_model(registered_model_name=...) calls: the files come from local_model_path.
    v2 = client._create_model_version("main.default.iris", source="dbfs:/somewhere/else", run_id="r-2",
                                      local_model_path="model")
    report["created"] = [v1.status, v1.version, v2.version, v2.source, v2.run_id]
    client.set_registered_model_alias("main.default.iris", "Champion", "1")
    client.set_registered_model_alias("main.default.iris", "Challenger", "2")
    client.set_registered_model_alias("main.default.iris", "Challenger", "1")
    client.delete_registered_model_alias("main.default.iris", "Challenger")
    client.set_registered_model_tag("main.default.iris", "owner", "ds")
    client.delete_registered_model_tag("main.default.iris", "team")
    client.set_model_version_tag("main.default.iris", "1", "validated", "yes")
    client.delete_model_version_tag("main.default.iris", "1", "stage")
    client.update_model_version("main.default.iris", "2", description="second")
    model = client.get_registered_model("main.default.iris")
    report["model"] = {"aliases": model.aliases, "tags": model.tags, "description": model.description}
    champion = client.get_model_version_by_alias("main.default.iris", "Champion")
    report["champion"] = {"version": champion.version, "aliases": champion.aliases, "tags": champion.tags,
                          "run_id": champion.run_id, "source": champion.source, "status": champion.status}
    first = client.search_model_versions("name='main.default.iris'", max_results=1)
    second = client.search_model_versions("name='main.default.iris'", max_results=1, page_token=first.token)
    report["search"] = [[v.version for v in first], bool(first.token), [v.version for v in second], bool(second.token)]
    report["by_run"] = [v.version for v in client.search_model_versions("run_id='run-1'")]

    loaded = mlflow.pyfunc.load_model("models:/main.default.iris@Champion")
    report["prediction"] = loaded.predict(x).tolist()

    # copy_model_version passes the source version's model_id on, and MLflow 3.17.2 fails on the
    # empty one a version registered from a directory has (get_logged_model('')). A version of a
    # logged model copies; the logged model is looked up in the client's tracking store, a local
    # one here so that the test needs no MLflow behind the stand-in.
    mlflow.set_tracking_uri("sqlite:///tracking.db")
    logged = mlflow.create_external_model(name="iris")
    v3 = client._create_model_version("main.default.iris", source=logged.model_uri, local_model_path="model", model_id=logged.model_id)
    report["model_id_kept"] = v3.model_id == logged.model_id
    copy = client.copy_model_version("models:/main.default.iris/3", "prod.ml.iris")
    report["copy"] = [copy.name, copy.version, copy.source, copy.status]
    report["copy_prediction"] = mlflow.pyfunc.load_model("models:/prod.ml.iris/1").predict(x).tolist()

    report["errors"] = {
        "missing": error_of(lambda: client.get_registered_model("main.default.missing")),
        "duplicate": error_of(lambda: client.create_registered_model("main.default.iris")),
        "two_levels": error_of(lambda: client.create_registered_model("default.iris")),
        "no_version": error_of(lambda: client.get_model_version("main.default.iris", "9")),
        "no_alias": error_of(lambda: client.get_model_version_by_alias("main.default.iris", "nobody")),
        "bad_filter": error_of(lambda: client.search_model_versions("tags.x='y'")),
    }

    # A UC volume as an artifact root: a file, a directory, listing, and both back.
    os.makedirs("plots/deeper")
    open("notes.txt", "w").write("hello volume")
    open("plots/a.csv", "w").write("1,2")
    open("plots/deeper/b.bin", "wb").write(os.urandom(20 * 1024 * 1024))
    root = "dbfs:/Volumes/main/default/mlflow-artifacts/run-1"
    repo = get_artifact_repository(root)
    report["volume_repo"] = type(repo).__name__
    report["plain_volume_path_repo"] = type(get_artifact_repository("/Volumes/main/default/v/x")).__name__
    repo.log_artifact("notes.txt")
    repo.log_artifacts("plots", "plots")
    report["listing"] = [[f.path, f.is_dir, f.file_size] for f in repo.list_artifacts()]
    report["listing_plots"] = [[f.path, f.is_dir, f.file_size] for f in repo.list_artifacts("plots")]
    directory = mlflow.artifacts.download_artifacts(root + "/plots", dst_path="back")
    single = mlflow.artifacts.download_artifacts(root + "/notes.txt", dst_path="back")
    report["downloaded"] = {
        "dir": sorted(str(p.relative_to(directory)) for p in __import__("pathlib").Path(directory).rglob("*") if p.is_file()),
        "big_same": open(os.path.join(directory, "deeper/b.bin"), "rb").read() == open("plots/deeper/b.bin", "rb").read(),
        "file": open(single).read(),
    }
    print("REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A stand-in without MLflow (its start costs 15 to 100 s here): UC and files need none."""
    with StandinWorkspace(tmp_path_factory.mktemp("uc-workspace"), with_mlflow=False) as running:
        yield running


@pytest.fixture(scope="module")
def report(workspace, tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("uc-client")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))},
        **QUIET_ENV,
        **workspace.oauth_env(),
        "MLFLOW_TRACKING_URI": "databricks",
        "MLFLOW_REGISTRY_URI": "databricks-uc",
    }
    done = subprocess.run([sys.executable, "-c", CLIENT], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("REPORT "))


def test_versions_register_through_the_files_api_and_become_ready(workspace, report):
    assert report["store"] == "UcModelRegistryStore"
    assert report["created"] == ["READY", "1", "2", "dbfs:/somewhere/else", "r-2"]
    versions = workspace.unity_catalog.model_versions("main.default.iris")
    assert [(v.version, v.status) for v in versions] == [(1, "READY"), (2, "READY"), (3, "READY")]
    assert versions[0].run_id == "run-1"
    assert versions[0].user_id == workspace.client_id
    assert (versions[0].storage_dir / "MLmodel").is_file()
    assert versions[0].storage_dir.is_relative_to(workspace.files_root)
    uploads = [r for r in workspace.files_calls() if r.method == "PUT" and r.path.startswith("/api/2.0/fs/files/Models/main/default/iris/1/")]
    assert uploads and all(r.credential == "oauth" and r.status == 204 for r in uploads)


def test_aliases_tags_and_search(report):
    assert report["model"] == {"aliases": {"Champion": "1"}, "tags": {"owner": "ds"}, "description": "Iris classifier"}
    assert report["champion"] == {
        "version": "1", "aliases": ["Champion"], "tags": {"validated": "yes"},
        "run_id": "run-1", "source": report["champion"]["source"], "status": "READY",
    }  # fmt: skip
    assert report["champion"]["source"].endswith("/model")
    assert report["search"] == [["2"], True, ["1"], False]
    assert report["by_run"] == ["1"]


def test_models_load_and_copy_by_alias_through_the_files_api(workspace, report):
    assert report["prediction"] == [[2.0, 4.0]]
    assert report["model_id_kept"]
    assert report["copy"] == ["prod.ml.iris", "1", "models:/main.default.iris/3", "READY"]
    assert report["copy_prediction"] == [[2.0, 4.0]]
    copied = workspace.unity_catalog.model_versions("prod.ml.iris")[0]
    source = workspace.unity_catalog.model_versions("main.default.iris")[2]
    # The copy is the downloaded source, plus the registered_model_meta MLflow writes on download.
    assert {p.name for p in source.storage_dir.iterdir()} < {p.name for p in copied.storage_dir.iterdir()}
    downloads = [r for r in workspace.files_calls() if r.path.startswith("/standin-cloud-storage/")]
    assert downloads and all(r.status == 200 for r in downloads)  # presigned URLs, as a workspace hands out


def test_registry_errors_have_the_workspace_shape(report):
    errors = report["errors"]
    assert errors["missing"]["code"] == "RESOURCE_DOES_NOT_EXIST"
    assert errors["duplicate"]["code"] == "RESOURCE_ALREADY_EXISTS"
    # The stand-in answers 400 INVALID_PARAMETER_VALUE "... must specify all three levels ...";
    # MLflow adds its hint and re-raises, losing the code (INTERNAL_ERROR in 3.17.2).
    assert "specify all three levels" in errors["two_levels"]["message"]
    assert "legacy Workspace Model Registry" in errors["two_levels"]["message"]
    assert errors["no_version"]["code"] == "RESOURCE_DOES_NOT_EXIST"
    assert errors["no_alias"]["code"] == "RESOURCE_DOES_NOT_EXIST"
    assert errors["bad_filter"]["code"] == "INVALID_PARAMETER_VALUE"


def test_volume_artifacts_round_trip(workspace, report):
    assert report["volume_repo"] == "UCVolumesArtifactRepository"
    assert report["plain_volume_path_repo"] == "LocalArtifactRepository"  # /Volumes/… without dbfs: is a local path
    assert report["listing"] == [["notes.txt", False, 12], ["plots", True, None]]
    assert report["listing_plots"] == [["plots/a.csv", False, 3], ["plots/deeper", True, None]]
    assert report["downloaded"] == {"dir": ["a.csv", "deeper/b.bin"], "big_same": True, "file": "hello volume"}
    stored = workspace.files_root / "volumes/main/default/mlflow-artifacts/run-1"
    assert (stored / "notes.txt").read_text() == "hello volume"
    assert (stored / "plots/deeper/b.bin").stat().st_size == 20 * 1024 * 1024


# -- plain HTTP, against a stand-in without MLflow ------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    with StandinWorkspace(tmp_path_factory.mktemp("uc-bare"), with_mlflow=False) as running:
        yield running


@pytest.fixture(scope="module")
def http(bare) -> httpx.Client:
    token = httpx.post(f"{bare.url}/oidc/v1/token", data={"grant_type": "client_credentials"}, auth=(bare.client_id, bare.client_secret)).json()
    with httpx.Client(base_url=bare.url, headers={"Authorization": f"Bearer {token['access_token']}"}, trust_env=False) as client:
        yield client


UC = "/api/2.0/mlflow/unity-catalog"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{UC}/registered-models/get?name=main.default.iris"),
        ("POST", f"{UC}/registered-models/create"),
        ("GET", f"{UC}/registered-models:is-databricks-sdk-models-artifact-repository-enabled"),
        ("PUT", "/api/2.0/fs/files/Volumes/main/default/v/f.txt"),
        ("GET", "/api/2.0/fs/files/Volumes/main/default/v/f.txt"),
        ("HEAD", "/api/2.0/fs/directories/Volumes/main/default/v"),
        ("POST", "/api/2.0/fs/create-download-url?path=/Volumes/main/default/v/f.txt"),
    ],
)
def test_every_endpoint_refuses_calls_without_a_valid_token(bare, method, path):
    anonymous = httpx.request(method, bare.url + path, json={"name": "main.default.x"} if method == "POST" else None, trust_env=False)
    forged = httpx.request(method, bare.url + path, headers={"Authorization": "Bearer forged"}, trust_env=False)
    assert (anonymous.status_code, forged.status_code) == (401, 403)
    if method != "HEAD":
        assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
        assert forged.json()["error_code"] == "PERMISSION_DENIED"
    assert not any(bare.files_root.glob("volumes/**/f.txt"))
    assert "main.default.x" not in bare.unity_catalog.models


def test_required_fields_and_unknown_operations(http):
    assert http.post(f"{UC}/registered-models/create", json={}).json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert http.post(f"{UC}/registered-models/create", json={"name": "a.b/c.d"}).status_code == 400
    assert http.post(f"{UC}/registered-models/create", json={"name": "Main.Default.Upper"}).json()["registered_model"]["name"] == "main.default.upper"
    assert http.post(f"{UC}/model-versions/create", json={"name": "main.default.upper"}).json()["message"] == "Missing required parameter 'source'."
    assert http.get(f"{UC}/registered-models/search", params={"filter": "name='x'"}).status_code == 400
    assert http.get(f"{UC}/model-versions/search").status_code == 400  # UC searches versions of one model or one run
    assert http.get(f"{UC}/model-versions/get", params={"name": "main.default.upper", "version": "one"}).status_code == 400
    assert http.get(f"{UC}/nothing-here").json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_registered_model_search_pages(http):
    for name in ("c.s.m1", "c.s.m2", "c.s.m3"):
        http.post(f"{UC}/registered-models/create", json={"name": name})
    names, token = [], None
    while True:
        page = http.get(f"{UC}/registered-models/search", params={"max_results": 2, **({"page_token": token} if token else {})}).json()
        names += [m["name"] for m in page["registered_models"]]
        if not (token := page.get("next_page_token")):
            break
    assert [n for n in names if n.startswith("c.s.")] == ["c.s.m1", "c.s.m2", "c.s.m3"]


def test_a_finalized_versions_files_cannot_be_written(http, bare):
    http.post(f"{UC}/registered-models/create", json={"name": "c.s.frozen"})
    http.post(f"{UC}/model-versions/create", json={"name": "c.s.frozen", "source": "s3://x"})
    assert http.put("/api/2.0/fs/files/Models/c/s/frozen/1/MLmodel", content=b"x").status_code == 204
    http.post(f"{UC}/model-versions/finalize", json={"name": "c.s.frozen", "version": "1"})
    refused = http.put("/api/2.0/fs/files/Models/c/s/frozen/1/MLmodel", content=b"changed")
    assert refused.status_code == 403
    assert http.get("/api/2.0/fs/files/Models/c/s/frozen/1/MLmodel").content == b"x"
    assert http.get("/api/2.0/fs/files/Models/c/s/frozen/2/MLmodel").status_code == 404
    credentials = http.post(f"{UC}/model-versions/generate-temporary-credentials", json={"name": "c.s.frozen", "version": "1", "operation": "MODEL_VERSION_OPERATION_READ_WRITE"})
    assert credentials.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/Volumes/main/default/v/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/Volumes/main/default/v/a/%2E%2E/%2E%2E/other/x",
        "/Volumes/main/default/v//x",
        "/Volumes/main/default",
        "/Workspace/Users/x",
        "/Models/c/s/m",
    ],
)
def test_paths_outside_a_volume_or_model_version_are_refused(http, bare, path):
    answer = http.put(f"/api/2.0/fs/files{path}", content=b"nope")
    assert answer.status_code == 400, answer.text
    assert http.get(f"/api/2.0/fs/directories{path}").status_code == 400
    assert not any(p.read_bytes() == b"nope" for p in bare.workdir.rglob("*") if p.is_file())


def test_files_api_semantics(http):
    base = "/api/2.0/fs/files/Volumes/main/default/v/sem"
    assert http.put(f"{base}/f.bin", content=b"0123456789").status_code == 204
    assert http.put(f"{base}/f.bin", params={"overwrite": "false"}, content=b"x").status_code == 409
    head = http.head(f"{base}/f.bin")
    assert (head.status_code, head.headers["content-length"]) == (200, "10") and head.headers["last-modified"]
    ranged = http.get(f"{base}/f.bin", headers={"Range": "bytes=4-"})
    assert (ranged.status_code, ranged.content, ranged.headers["content-range"]) == (206, b"456789", "bytes 4-9/10")
    assert http.put(f"{base}/f.bin/child", content=b"x").status_code == 409  # a parent is a file
    assert http.put("/api/2.0/fs/directories/Volumes/main/default/v/sem/empty").status_code == 204
    listing = http.get("/api/2.0/fs/directories/Volumes/main/default/v/sem", params={"page_size": 1}).json()
    assert listing["contents"] == [{"path": "/Volumes/main/default/v/sem/empty", "name": "empty", "is_directory": True}]
    rest = http.get("/api/2.0/fs/directories/Volumes/main/default/v/sem", params={"page_token": listing["next_page_token"]}).json()
    assert [(e["name"], e["file_size"]) for e in rest["contents"]] == [("f.bin", 10)] and "next_page_token" not in rest
    assert http.delete("/api/2.0/fs/directories/Volumes/main/default/v/sem").status_code == 409  # not empty
    assert http.delete(f"{base}/f.bin").status_code == 204
    assert http.get(f"{base}/f.bin").json()["error_code"] == "NOT_FOUND"


def test_presigned_urls_check_their_signature(http):
    http.put("/api/2.0/fs/files/Volumes/main/default/v/signed.txt", content=b"secret")
    url = http.post("/api/2.0/fs/create-download-url", params={"path": "/Volumes/main/default/v/signed.txt"}).json()["url"]
    assert httpx.get(url, trust_env=False).content == b"secret"  # no bearer: the URL is the grant
    assert httpx.get(url[:-4] + "0000", trust_env=False).status_code == 403
