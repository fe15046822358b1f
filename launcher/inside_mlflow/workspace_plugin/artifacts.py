"""Artifacts behind the app: one `mlflow-artifacts` path space for the run files in the artifacts
destination and for the files of Unity Catalog model versions.

Clients of the app only ever see `mlflow-artifacts:` URIs and reach them through the app's
`/api/2.0/mlflow-artifacts/artifacts/...` routes, which the child serves with the app's own
workspace credentials:
- `<path>` is `<destination>/<path>` (a Unity Catalog volume on Databricks Apps);
- `_unity_catalog/models/<catalog.schema.model>/<version>/<path>` is that model version's file,
  read from Unity Catalog's storage (read only: a version's files are written once, on
  registration, by the registry store).
  MLflow moves them as the workspace says: the Files API, presigned URLs (default storage), or
  for a customer's storage a cloud SDK (boto3 with the `s3` extra); without that SDK the answer
  names the package (`cloud_sdk_required`).
Inside the child, the same `mlflow-artifacts:` URIs resolve to the destination too, so that the
registry store can read a run's model files when a client registers them (`proxied_repository`,
registered through MLflow's `mlflow.artifact_repository` entry points, not by touching its registry).
"""

from __future__ import annotations

import posixpath
import re
from contextlib import contextmanager
from urllib.parse import urlsplit

UC_MODELS_PREFIX = "_unity_catalog/models"
_MODEL_PATH = re.compile(r"^(?P<name>[^/.]+\.[^/.]+\.[^/.]+)/(?P<version>[0-9]+)(?:/(?P<rest>.*))?$")
# The cloud SDK MLflow reaches a customer's storage with, by the top-level module whose import
# failed (mlflow/utils/_unity_catalog_utils.py): the storage's name, the package, how to install it.
CLOUD_SDKS = {
    "boto3": ("S3", "boto3", "pip install 'mlflow-app[s3]'"),
    "botocore": ("S3", "boto3", "pip install 'mlflow-app[s3]'"),
    "azure": ("Azure Data Lake Storage", "azure-storage-file-datalake", "pip install azure-storage-file-datalake"),
    "google": ("Google Cloud Storage", "google-cloud-storage", "pip install google-cloud-storage"),
}


def model_version_download_uri(name: str, version: str | int) -> str:
    """Where a client of the app downloads a Unity Catalog model version's files from."""
    return f"mlflow-artifacts:/{UC_MODELS_PREFIX}/{name}/{version}"


def model_version_path(path: str) -> tuple[str, str, str] | None:
    """(name, version, path inside the version) for a path in the model space; None otherwise."""
    path = path.strip("/")
    if path != UC_MODELS_PREFIX and not path.startswith(UC_MODELS_PREFIX + "/"):
        return None
    match = _MODEL_PATH.match(path[len(UC_MODELS_PREFIX) + 1 :])
    if not match:
        from mlflow.exceptions import MlflowException

        raise MlflowException.invalid_parameter_value(f"'{path}' is not a model version path: use {UC_MODELS_PREFIX}/<catalog>.<schema>.<model>/<version>/<file>.")
    return match["name"], match["version"], match["rest"] or ""


@contextmanager
def cloud_sdk_required(model_name: str):
    """Moving a Unity Catalog model version's files, where they may be in customer-hosted storage.

    When the workspace keeps them in a customer's S3, ADLS or GCS storage, MLflow reaches it with that
    cloud's SDK; without it MLflow raises a 500 asking for `mlflow[databricks]`, which clients retry for
    minutes. This turns it into 501 NOT_IMPLEMENTED (not retried) naming the package the app lacks.
    The message holds no credential: only the storage's kind and the package.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, ImportError) as exc:
        missing = exc if isinstance(exc, ImportError) else exc.__cause__
        sdk = CLOUD_SDKS.get((getattr(missing, "name", None) or "").split(".")[0]) if isinstance(missing, ImportError) else None
        if sdk is None:
            raise
        from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED

        storage, package, install = sdk
        raise MlflowException(
            f"Unity Catalog keeps the files of '{model_name}' in customer-hosted {storage}, which MLflow reaches with {package}, "
            f"not installed in the app: install it ({install}; on Databricks Apps, {package} in the deployed requirements.txt) and restart the app.",
            error_code=NOT_IMPLEMENTED,
        ) from None


def model_version_repository(name: str, version: str):
    """MLflow's repository for a Unity Catalog model version, with this process's credentials."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(f"models:/{name}/{version}")


def proxied_repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    """The repository for an `mlflow-artifacts:` URI inside the child: MLflow's public
    `mlflow.artifact_repository` entry point for that scheme, which the launcher declares in the
    child's plugin dist-info (launcher/databricks/child_environment.py, write_child_plugin).

    While the server serves artifacts, such a URI names a file in the artifacts destination (or a
    whole Unity Catalog model version, in the model space), so that the registry store can read a
    run's model files when a client registers them. Otherwise it is MLflow's own repository, which
    reaches a tracking server over HTTP, as without the plugin.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from launcher.inside_mlflow import mlflow_internals

    destination = mlflow_internals.served_artifacts_destination()
    if destination is None:
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    path = urlsplit(artifact_uri).path.lstrip("/")
    if (model := model_version_path(path)) is not None:
        name, version, rest = model
        if rest:
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value("Name a whole model version, not a file inside it.")
        return model_version_repository(name, version)
    return get_artifact_repository(posixpath.join(destination, path) if path else destination)


class ProxiedArtifactRouter:
    """The repository MLflow's server uses for every `mlflow-artifacts` path (see the module doc).

    Paths outside the model space go to the destination's own repository unchanged (any method);
    paths inside it can be listed and downloaded only.
    """

    def __init__(self, destination: str):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self._destination = get_artifact_repository(destination)

    def __getattr__(self, name: str):
        return getattr(self._destination, name)

    def get_local_path(self, artifact_path: str):
        if model_version_path(artifact_path) is not None:
            return None
        return self._destination.get_local_path(artifact_path)

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        if (model := model_version_path(artifact_path)) is None:
            return self._destination.download_artifacts(artifact_path, dst_path)
        name, version, rest = model
        with cloud_sdk_required(name):
            return model_version_repository(name, version).download_artifacts(rest, dst_path)

    def list_artifacts(self, path: str | None = None):
        if path is None or (model := model_version_path(path)) is None:
            return self._destination.list_artifacts(path)
        from mlflow.entities import FileInfo

        name, version, rest = model
        with cloud_sdk_required(name):
            # "" for the version's root, not None: MLflow's presigned-URL repository (3.17.2) joins it into a path.
            files = model_version_repository(name, version).list_artifacts(rest)
        base = f"{UC_MODELS_PREFIX}/{name}/{version}"
        return [FileInfo(posixpath.join(base, f.path), f.is_dir, f.file_size) for f in files]

    def _refuse_model_space(self, artifact_path: str | None) -> None:
        if artifact_path and model_version_path(artifact_path) is not None:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

            raise MlflowException(
                "Unity Catalog model files are read only through the app; register a new model version instead.",
                error_code=PERMISSION_DENIED,
            )

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        self._refuse_model_space(artifact_path)
        self._destination.log_artifact(local_file, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self._refuse_model_space(artifact_path)
        self._destination.log_artifacts(local_dir, artifact_path)

    def log_artifact_from_stream(self, stream, file_name: str, artifact_path: str | None = None):
        self._refuse_model_space(artifact_path)
        return self._destination.log_artifact_from_stream(stream, file_name, artifact_path=artifact_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        self._refuse_model_space(artifact_path)
        self._destination.delete_artifacts(artifact_path)
