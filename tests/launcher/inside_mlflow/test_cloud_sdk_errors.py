"""A Unity Catalog model version in customer-hosted storage whose cloud SDK the app lacks: the
answer names the package, as a 501 clients do not retry, and holds no credential. Driven through
MLflow's own code that picks the SDK (mlflow/utils/_unity_catalog_utils.py), so an MLflow that
reports a missing SDK differently fails here first."""

from __future__ import annotations

import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_uc_registry_messages_pb2 import AwsCredentials, AzureUserDelegationSAS, GcpOauthToken, TemporaryCredentials
from mlflow.utils._unity_catalog_utils import get_artifact_repo_from_storage_info

from launcher.inside_mlflow.workspace_plugin.artifacts import cloud_sdk_required

SECRET = "sigSECRETc0ffee"
CASES = {
    "s3": ("s3://bucket/models/1", TemporaryCredentials(aws_temp_credentials=AwsCredentials(access_key_id="A", secret_access_key=SECRET, session_token=SECRET)), "'mlflow-app[s3]'", "boto3"),
    "azure": ("abfss://c@a.dfs.core.windows.net/m/1", TemporaryCredentials(azure_user_delegation_sas=AzureUserDelegationSAS(sas_token=SECRET)), "azure-storage-file-datalake", "azure"),
    "gcs": ("gs://bucket/m/1", TemporaryCredentials(gcp_oauth_token=GcpOauthToken(oauth_token=SECRET)), "google-cloud-storage", "google.cloud"),
}


@pytest.mark.parametrize("kind", CASES)
def test_a_missing_cloud_sdk_is_a_501_naming_the_package(kind, monkeypatch):
    location, token, package, module = CASES[kind]
    monkeypatch.setitem(sys.modules, module, None)  # absent, whatever this environment has installed
    with pytest.raises(MlflowException) as raised:
        with cloud_sdk_required("main.default.iris"):
            get_artifact_repo_from_storage_info(location, token, lambda: token)
    error = raised.value
    assert (error.error_code, error.get_http_status_code()) == ("NOT_IMPLEMENTED", 501)
    assert package in error.message and "main.default.iris" in error.message
    assert SECRET not in error.message and error.__cause__ is None and error.__suppress_context__


def test_other_failures_pass_unchanged():
    with pytest.raises(MlflowException, match="no such version") as raised:
        with cloud_sdk_required("main.default.iris"):
            raise MlflowException.invalid_parameter_value("no such version")
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(ImportError):
        with cloud_sdk_required("main.default.iris"):
            import a_module_nobody_has  # noqa: F401
