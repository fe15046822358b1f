"""Artifacts in an S3-compatible bucket shared by two replicas on one PostgreSQL.

moto's standalone S3 server (tests/standin/cloud_storage.py) speaks the S3 protocol on 127.0.0.1
to the MLflow child's real boto3. Replica A has its AWS credentials in its environment, replica B
in a shared credentials file: the two ends of the AWS credential chain an operator uses. The test
process, where the mlflow client runs, has no AWS credentials at all.

MLflow 3.17 with an s3:// destination advertises multipart transfers in `/server-info`: the client
then sends a file of MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE or more in parts, PUT straight to the
bucket on presigned URLs (the app only creates and completes the upload), and downloads every file on
a presigned URL from the bucket. With MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD/DOWNLOAD=false the client
sends and fetches through the app instead. Both ways are checked, byte for byte, and timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.app_process import AppProcess, resident_bytes
from tests.standin.cloud_storage import S3Server

pytestmark = pytest.mark.e2e

BUCKET = "mlflow-app-artifacts"
PREFIX = "team-a/mlflow"
MIB = 1024 * 1024
BIG_FILE_BYTES = 200 * MIB
PART_BYTES = 25 * MIB  # the client's MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE here: 8 parts, an ETag MLflow's server-side boto3 (8 MiB parts) never makes
DB_PASSWORD = "pgPASSWORDs3a7c41e9d02"
# Distinctive, so that finding one in any output is a leak and nothing else.
ACCESS_KEY_ID = "ASIAS3E2E" + uuid.uuid4().hex[:11].upper()
SECRET_ACCESS_KEY = "awsSECRETs3e2e" + uuid.uuid4().hex
SESSION_TOKEN = "awsSESSIONs3e2e" + uuid.uuid4().hex + uuid.uuid4().hex
SECRETS = {"AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN}


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    server = S3Server(tmp_path_factory.mktemp("s3")).start(bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


def without_aws(environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith("AWS_")}


@pytest.fixture(scope="module")
def replicas(postgres, s3, tmp_path_factory) -> tuple[AppProcess, AppProcess]:
    """Two replicas on one new database and one bucket, started together; JSON logs to read requests."""
    uri = postgres.create_database("mlflow_s3", "mlflow_s3", DB_PASSWORD)
    base = tmp_path_factory.mktemp("s3-replicas")
    credentials_file = base / "aws-credentials"
    credentials_file.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\naws_session_token = {SESSION_TOKEN}\n")
    common = {"MLFLOW_S3_ENDPOINT_URL": s3.url, "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_APP_LOG_FORMAT": "json"}
    from_environment = {**common, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    from_file = {**common, "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file), "AWS_CONFIG_FILE": str(base / "no-aws-config")}
    started = []
    for name, env in (("a", from_environment), ("b", from_file)):
        app = AppProcess(base / name, "--backend-store-uri", uri, "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}")
        app.env = {**without_aws(app.env), **env}
        started.append(app.start())
    try:
        for replica in started:
            replica.wait_ready(timeout=300)  # the first start creates the schema
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def client_env(monkeypatch):
    """The client's side: no AWS credentials, no multipart settings of its own."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("MLFLOW_") and ("MULTIPART" in name or name.startswith("MLFLOW_S3_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return monkeypatch


def use(app: AppProcess, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", app.url)
    mlflow.set_tracking_uri(app.url)
    mlflow.set_registry_uri(app.url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bucket_objects(s3: S3Server, prefix: str = PREFIX) -> dict[str, dict]:
    """Every object under `prefix` in the bucket, by key: what landed (moto accepts any key)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="reader", aws_secret_access_key="reader")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"]] = item
    return found


def object_bytes(s3: S3Server, key: str) -> bytes:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="reader", aws_secret_access_key="reader")
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def requests_logged(app: AppProcess) -> list[dict]:
    """The front's request lines (JSON logs): method, path, status, bytes in and out."""
    lines = []
    for line in app.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "method" in record and "path" in record:
            lines.append(record)
    return lines


def test_artifacts_and_a_model_written_through_one_replica_are_read_through_the_other(replicas, s3, client_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    a, b = replicas
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "notes.txt").write_text("written through replica A")
    binary = os.urandom(3 * MIB + 17)
    (source / "nested" / "weights.bin").write_bytes(binary)
    features, labels = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    name = unique("iris-s3")

    use(a, client_env)
    experiment_id = MlflowClient().create_experiment(unique("s3-artifacts"))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifacts(str(source), artifact_path="files")
        mlflow.log_text("hello", "notes/readme.txt")
        info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(features, model.predict(features)))
    run_id = run.info.run_id
    assert mlflow.register_model(info.model_uri, name).version == "1"
    assert MlflowClient().get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/"), "clients address artifacts through the app"

    use(b, client_env)
    expected = list(model.predict(features.head(10)))
    logged_before = len(requests_logged(b))
    # MLflow's default with a bucket: files come from it on presigned URLs; the second round goes
    # through the app, as for clients that cannot reach the bucket.
    for through_the_app in (False, True):
        if through_the_app:
            client_env.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="files", dst_path=str(tmp_path / f"down-{through_the_app}")))
        assert (downloaded / "notes.txt").read_text() == "written through replica A"
        assert (downloaded / "nested" / "weights.bin").read_bytes() == binary
        assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt") == "hello"
        assert list(mlflow.pyfunc.load_model(f"models:/{name}/1").predict(features.head(10))) == expected
        # Not `runs:/<run>/model` through the app: MLflow first asks for the run's path `model`, which
        # holds nothing in MLflow 3, and a missing S3 key answers 500, which the client retries for
        # minutes (mlflow/mlflow#24535); on the presigned path it is a 404.
        model_uri = info.model_uri if through_the_app else f"runs:/{run_id}/model"
        assert list(mlflow.sklearn.load_model(model_uri).predict(features.head(10))) == expected
    b.wait_until(lambda: len(requests_logged(b)) > logged_before, 10, "the request lines")
    # /api/2.0/mlflow-artifacts/{presigned,artifacts}/<experiment>/<run>/artifacts/files/nested/weights.bin
    weights = dict((r["path"].split("/")[4], r["bytes_out"]) for r in requests_logged(b)[logged_before:] if r["path"].endswith(f"/{run_id}/artifacts/files/nested/weights.bin"))
    assert sorted(weights) == ["artifacts", "presigned"], weights
    assert weights["artifacts"] == len(binary) and weights["presigned"] < 10_000, "a URL from the app, then the file itself through it"
    # The UI's way, served by MLflow itself from the bucket through replica B.
    page = httpx.get(f"{b.url}/get-artifact", params={"run_id": run_id, "path": "files/nested/weights.bin"}, timeout=60)
    assert (page.status_code, page.content) == (200, binary)

    # Everything is in the bucket, under the prefix, and nothing on either replica's disk.
    keys = bucket_objects(s3)
    mine = {key.split(f"/{run_id}/artifacts/", 1)[1]: key for key in keys if f"/{run_id}/artifacts/" in key}
    assert {"files/notes.txt", "files/nested/weights.bin", "notes/readme.txt"} <= set(mine)
    assert object_bytes(s3, mine["files/nested/weights.bin"]) == binary
    assert any(key.endswith("/MLmodel") for key in keys), "the model's files are in the bucket too"
    for replica in replicas:
        assert not list((replica.workdir / "data").rglob("weights.bin"))


def test_a_run_whose_artifact_location_is_the_bucket_itself_is_served_by_both(replicas, s3, client_env, tmp_path):
    """--default-artifact-root's shape: an experiment at s3://…, which the client writes with keys of its
    own; the replicas read it with theirs (the UI's get-artifact, and listing)."""
    import mlflow
    from mlflow import MlflowClient

    a, b = replicas
    use(a, client_env)
    location = f"s3://{BUCKET}/direct/{uuid.uuid4().hex[:8]}"
    experiment_id = MlflowClient().create_experiment(unique("s3-direct"), artifact_location=location)
    client_env.setenv("MLFLOW_S3_ENDPOINT_URL", s3.url)  # this client's own access to the bucket
    client_env.setenv("AWS_ACCESS_KEY_ID", "client-key")
    client_env.setenv("AWS_SECRET_ACCESS_KEY", "client-secret")
    client_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("straight to the bucket", "direct.txt")
    assert MlflowClient().get_run(run.info.run_id).info.artifact_uri.startswith(location)
    for replica in replicas:
        page = httpx.get(f"{replica.url}/get-artifact", params={"run_id": run.info.run_id, "path": "direct.txt"}, timeout=60)
        assert (page.status_code, page.text) == (200, "straight to the bucket")
        listed = httpx.get(f"{replica.url}/api/2.0/mlflow/artifacts/list", params={"run_id": run.info.run_id}, timeout=60)
        assert [f["path"] for f in listed.json()["files"]] == ["direct.txt"]


class MemoryPeaks:
    """Peak resident memory of a replica's front and of its MLflow child while a block runs."""

    def __init__(self, app: AppProcess):
        self.front = psutil.Process(app.process.pid)
        self.children = [psutil.Process(pid) for pid in app.mlflow_pids()]
        self.before = self.sample()
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        return {"front": resident_bytes([self.front]), "mlflow": resident_bytes(self.children)}

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for part, value in self.sample().items():
                self.peak[part] = max(self.peak[part], value)

    def __enter__(self) -> MemoryPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mib(self) -> dict[str, float]:
        return {part: round((self.peak[part] - self.before[part]) / MIB, 1) for part in self.peak}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def timed(what: str, measurements: dict, app: AppProcess, action):
    """`action()`'s result; its duration, rate and the replica's peak memory growth go to `measurements`."""
    with MemoryPeaks(app) as memory:
        started = time.monotonic()
        result = action()
        seconds = time.monotonic() - started
    measurements[what] = {"seconds": round(seconds, 2), "MB/s": round(BIG_FILE_BYTES / 1e6 / seconds, 1), "rss_growth_mib": memory.growth_mib()}
    return result


def test_a_200_mib_artifact_goes_up_in_parts_and_comes_back_whole(replicas, s3, client_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    a, b = replicas
    big = tmp_path / "big" / "weights-200mib.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        for _ in range(BIG_FILE_BYTES // (8 * MIB)):
            f.write(os.urandom(8 * MIB))
    digest = sha256_of(big)
    # MLflow's client sends files of 500 MiB or more in parts by default; 200 MiB here, in 25 MiB parts.
    client_env.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(100 * MIB))
    client_env.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART_BYTES))
    measurements: dict[str, dict] = {}

    use(a, client_env)
    experiment_id = MlflowClient().create_experiment(unique("s3-big"))
    run_id = MlflowClient().create_run(experiment_id).info.run_id
    logged_before = len(requests_logged(a))
    timed("upload in parts (client to bucket, presigned)", measurements, a, lambda: MlflowClient().log_artifact(run_id, str(big), "parts"))
    client_env.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
    timed("upload through the app (one PUT)", measurements, a, lambda: MlflowClient().log_artifact(run_id, str(big), "whole"))
    client_env.delenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD")

    # MLflow's multipart path: the app created and completed the upload, the parts did not pass it...
    a.wait_until(lambda: any(f"whole/{big.name}" in r["path"] for r in requests_logged(a)), 10, "the request lines")  # written in batches
    seen = [(r["method"], r["path"], r["status"], r.get("bytes_in", 0)) for r in requests_logged(a)[logged_before:]]
    assert [s[:3] for s in seen if "/mlflow-artifacts/mpu/" in s[1]] == [
        ("POST", f"/api/2.0/mlflow-artifacts/mpu/create/{experiment_id}/{run_id}/artifacts/parts", 200),
        ("POST", f"/api/2.0/mlflow-artifacts/mpu/complete/{experiment_id}/{run_id}/artifacts/parts", 200),
    ], seen
    puts = [s for s in seen if s[0] == "PUT"]
    assert [(p[1], p[3]) for p in puts] == [(f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/whole/{big.name}", BIG_FILE_BYTES)]
    # ...and the bucket assembled 8 parts (an S3 ETag of a multipart object ends in "-<parts>").
    objects = bucket_objects(s3)
    stored = {key.rsplit("/artifacts/", 1)[1]: item for key, item in objects.items() if f"/{run_id}/artifacts/" in key}
    assert stored[f"parts/{big.name}"]["Size"] == BIG_FILE_BYTES
    assert stored[f"parts/{big.name}"]["ETag"].strip('"').endswith(f"-{BIG_FILE_BYTES // PART_BYTES}")
    assert stored[f"whole/{big.name}"]["Size"] == BIG_FILE_BYTES
    part_puts = [line for line in (s3.workdir / "s3-server.log").read_text(errors="replace").splitlines() if "PUT /" in line and "partNumber=" in line and "X-Amz-Signature=" in line]
    assert len(part_puts) == BIG_FILE_BYTES // PART_BYTES, "each part went to the bucket on its presigned URL"

    use(b, client_env)
    logged_before = len(requests_logged(b))
    down = tmp_path / "down"
    fetch = mlflow.artifacts.download_artifacts
    presigned = timed("download from the bucket (presigned)", measurements, b, lambda: fetch(run_id=run_id, artifact_path=f"parts/{big.name}", dst_path=str(down / "presigned")))
    assert sha256_of(Path(presigned)) == digest
    client_env.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    proxied = timed("download through the app", measurements, b, lambda: fetch(run_id=run_id, artifact_path=f"whole/{big.name}", dst_path=str(down / "proxied")))
    assert sha256_of(Path(proxied)) == digest
    # The first came from the bucket on a presigned URL the app handed out; the second through the app.
    b.wait_until(lambda: any(f"whole/{big.name}" in r["path"] for r in requests_logged(b)), 10, "the request lines")
    seen = [(r["method"], r["path"], r.get("bytes_out", 0)) for r in requests_logged(b)[logged_before:] if r["path"].endswith(big.name)]
    artifacts = f"{experiment_id}/{run_id}/artifacts"
    assert [(m, p) for m, p, _ in seen if "/presigned/" in p] == [("GET", f"/api/2.0/mlflow-artifacts/presigned/{artifacts}/parts/{big.name}")], seen
    assert [(m, p, n) for m, p, n in seen if "/presigned/" not in p] == [("GET", f"/api/2.0/mlflow-artifacts/artifacts/{artifacts}/whole/{big.name}", BIG_FILE_BYTES)], seen

    report = json.dumps(measurements, indent=2)
    print(f"\n200 MiB through S3 (moto on 127.0.0.1):\n{report}")
    (Path(os.environ.get("MLFLOW_APP_S3_MEASUREMENTS", tmp_path / "measurements.json"))).write_text(report)


def test_credentials_never_show_in_logs_health_or_metrics(replicas):
    """Run last in the module: the logs then hold every transfer above."""
    for replica in replicas:
        # Errors from the bucket, as MLflow answers them: a missing key (MLflow says 500, mlflow/mlflow#24535).
        missing = httpx.get(f"{replica.url}/api/2.0/mlflow-artifacts/artifacts/0/no-such-run/artifacts/missing.bin", timeout=60)
        assert missing.status_code == 500 and "HeadObject" in missing.json()["message"], missing.text
        outputs = {
            "an error": missing.text,
            "/health": httpx.get(f"{replica.url}/health", timeout=10).text,
            "/metrics": httpx.get(f"{replica.url}/metrics", timeout=10).text,
        }
        replica.wait_until(lambda: "missing.bin" in replica.log_text(), 10, "the request line")
        outputs["log"] = replica.log_text()
        assert "s3://mlflow-app-artifacts/team-a/mlflow" in outputs["log"], "the destination is logged (it holds no secret)"
        for where, text in outputs.items():
            for name, secret in SECRETS.items():
                assert secret not in text, f"{name} in {where} of {replica.url}"
            assert DB_PASSWORD not in text
        assert "Traceback" not in outputs["log"]
