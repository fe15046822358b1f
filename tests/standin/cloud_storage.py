"""Where the stand-in's Unity Catalog keeps a model version's files, and what
`generate-temporary-credentials` answers for them.

MLflow (3.17.2, `UcModelRegistryStore._get_artifact_repo` and `UnityCatalogModelsArtifactRepository`)
asks `is-databricks-sdk-models-artifact-repository-enabled` first. When the workspace answers false
it asks for temporary credentials, and what they say decides how the files move:
- `DEFAULT_STORAGE` (Databricks-managed storage): no cloud keys; MLflow asks the workspace for
  presigned URLs (`/api/2.0/fs/create-upload-url`, `create-download-url`) and lists with
  `/api/2.0/fs/directories/Models/…`. The stand-in keeps these files on its own disk (files_api.py).
- customer-hosted storage: cloud keys for the version's `storage_location`, which MLflow uses with
  the cloud's SDK: `aws_temp_credentials` (boto3, `s3://`), `azure_user_delegation_sas`
  (azure-storage-file-datalake, `abfss://`), `gcp_oauth_token` (google-cloud-storage, `gs://`).
  `CustomerS3` points at a real S3-speaking server on 127.0.0.1 (`S3Server`, moto's standalone
  server); the Azure and GCS modes hand out well-formed credentials for storage that exists nowhere,
  enough to see what a client without that SDK does.

A storage mode applies to the whole metastore (`UnityCatalogRegistry.storage`) or to one catalog
(`catalog_storage`), as a catalog may have a managed location of its own. What the stand-in does
not model: the scope of the cloud keys (moto accepts any key for any bucket, so keys handed out for
reading could write, and keys outlive the version's finalisation).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from launcher.mlflow_process import die_with_parent
from tests.app_process import free_port

CREDENTIAL_TTL_MS = 3_600_000
S3_START_TIMEOUT = 60.0


def expiry() -> int:
    return int(time.time() * 1000) + CREDENTIAL_TTL_MS


class ModelStorage(Protocol):
    """One storage mode: where a version's files are, and the credentials for them."""

    def location(self, relative: str) -> str: ...

    def credentials(self) -> dict: ...


@dataclass
class DefaultStorage:
    """Databricks-managed storage: the files are reached through the workspace, never with cloud keys."""

    def location(self, relative: str) -> str:
        return f"s3://standin-uc-metastore/{relative}"

    def credentials(self) -> dict:
        return {"storage_mode": "DEFAULT_STORAGE", "expiration_time": expiry()}


@dataclass
class CustomerS3:
    """A customer's S3 bucket (on `endpoint_url`), reached with AWS temporary credentials."""

    endpoint_url: str
    bucket: str = "standin-uc-customer"
    access_key_id: str = field(default_factory=lambda: "ASIASTANDIN" + secrets.token_hex(4).upper())
    secret_access_key: str = field(default_factory=lambda: "awsSECRET" + secrets.token_urlsafe(24))
    session_token: str = field(default_factory=lambda: "awsSESSION" + secrets.token_urlsafe(32))

    def location(self, relative: str) -> str:
        return f"s3://{self.bucket}/{relative}"

    def credentials(self) -> dict:
        keys = {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key, "session_token": self.session_token}
        return {"storage_mode": "CUSTOMER_HOSTED", "aws_temp_credentials": keys, "expiration_time": expiry()}

    def secrets(self) -> list[str]:
        """What must never appear in a log or an answer."""
        return [self.secret_access_key, self.session_token]

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key, aws_session_token=self.session_token,
        )  # fmt: skip

    def objects(self, location: str) -> dict[str, bytes]:
        """Every object under an `s3://` location, by its key relative to it: what landed."""
        prefix = location.removeprefix(f"s3://{self.bucket}/").rstrip("/") + "/"
        s3 = self.client()
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"][len(prefix) :]] = s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
        return found


@dataclass
class CustomerAzure:
    """A customer's ADLS Gen2 container, reached with a user delegation SAS (no server behind it)."""

    sas_token: str = field(default_factory=lambda: "sv=2023-11-03&sr=d&sp=racwl&sig=azSAS" + secrets.token_urlsafe(24))

    def location(self, relative: str) -> str:
        return f"abfss://models@standinucstorage.dfs.core.windows.net/{relative}"

    def credentials(self) -> dict:
        return {"storage_mode": "CUSTOMER_HOSTED", "azure_user_delegation_sas": {"sas_token": self.sas_token}, "expiration_time": expiry()}

    def secrets(self) -> list[str]:
        return [self.sas_token]


@dataclass
class CustomerGcs:
    """A customer's GCS bucket, reached with an OAuth access token (no server behind it)."""

    oauth_token: str = field(default_factory=lambda: "ya29.gcpTOKEN" + secrets.token_urlsafe(24))

    def location(self, relative: str) -> str:
        return f"gs://standin-uc-customer/{relative}"

    def credentials(self) -> dict:
        return {"storage_mode": "CUSTOMER_HOSTED", "gcp_oauth_token": {"oauth_token": self.oauth_token}, "expiration_time": expiry()}

    def secrets(self) -> list[str]:
        return [self.oauth_token]


@contextmanager
def model_files_branch(registry, sdk_repository: bool, storage: ModelStorage | None = None, catalog: str | None = None):
    """The registry set to one branch for the block, and restored after: the e2e stand-in is shared.

    `sdk_repository` is what `is-databricks-sdk-models-artifact-repository-enabled` answers; `storage`
    is the mode for the whole metastore, or for `catalog` alone when named."""
    saved = registry.sdk_models_artifact_repository, registry.storage, dict(registry.catalog_storage)
    registry.sdk_models_artifact_repository = sdk_repository
    if storage is not None and catalog:
        registry.catalog_storage[catalog] = storage
    elif storage is not None:
        registry.storage = storage
    try:
        yield registry
    finally:
        registry.sdk_models_artifact_repository, registry.storage = saved[0], saved[1]
        registry.catalog_storage.clear()
        registry.catalog_storage.update(saved[2])


class S3Server:
    """moto's standalone S3 server as a subprocess on a free 127.0.0.1 port, with one bucket."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, bucket: str = "standin-uc-customer") -> S3Server:
        import boto3

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.workdir / "s3-server.log", "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
        deadline = time.monotonic() + S3_START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto's S3 server exited:\n{(self.workdir / 's3-server.log').read_text(errors='replace')[-2000:]}")
            try:
                s3.create_bucket(Bucket=bucket)
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
