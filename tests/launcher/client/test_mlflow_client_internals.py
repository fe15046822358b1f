"""The MLflow client internals the token provider relies on (launcher/client/mlflow_client_internals.py)
are there with the shape relied on; on another MLflow release the module warns once and does nothing.

A failure here after an MLflow upgrade means reading mlflow/utils/rest_utils.py again before moving
TESTED_MLFLOW on."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging

import pytest

from launcher.client import mlflow_client_internals as internals
from launcher.client.mlflow_release import TESTED_MLFLOW


def test_the_installed_mlflow_is_a_tested_release():
    installed = importlib.metadata.version("mlflow")
    assert ".".join(installed.split(".")[:2]) in TESTED_MLFLOW, f"MLflow {installed}: read the internals below again, then add it to TESTED_MLFLOW"
    assert internals.UNTESTED is None


def test_http_request_asks_for_headers_with_the_request_in_its_locals():
    from mlflow.utils import rest_utils

    function = getattr(rest_utils, internals.HTTP_REQUEST_FUNCTION)
    assert function.__module__ == internals.HTTP_REQUEST_MODULE and function.__name__ == internals.HTTP_REQUEST_FUNCTION
    assert {"host_creds", "extra_headers"} <= set(inspect.signature(function).parameters)
    source = inspect.getsource(function)
    url_set = source.index('url = f"{cleaned_hostname}{endpoint}"')
    headers_asked = source.index("resolve_request_headers()")
    assert url_set < headers_asked, "http_request must know its url before it asks providers for headers"
    assert "extra_headers" in source[headers_asked:] and "host_creds" in source[headers_asked:]


def test_the_credential_attributes_are_all_of_mlflow_host_creds():
    """A new kind of credential in MlflowHostCreds fails here: the provider must then learn it, or it
    would add its token to calls the user authenticates otherwise."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    fields = [name for name in inspect.signature(MlflowHostCreds.__init__).parameters if name != "self"]
    assert sorted(fields) == sorted(internals.CREDENTIAL_ATTRIBUTES + internals.NON_CREDENTIAL_ATTRIBUTES)
    assert set(vars(MlflowHostCreds("https://x"))) == set(fields)


def test_the_request_is_found_from_a_provider_inside_http_request(monkeypatch):
    """Through MLflow's own http_request, as the provider meets it (no server needed: the call fails
    after the headers are asked for)."""
    from mlflow.tracking.request_header import registry
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    found = []

    def provider_chain():  # as deep as the provider's own: outgoing_request, _request_for_us, request_headers
        def outgoing_request():
            return internals.calling_http_request()

        def request_for_us():
            return outgoing_request()

        return request_for_us()

    def resolve_request_headers():
        found.append(provider_chain())
        raise RuntimeError("stop here")

    monkeypatch.setattr(registry, "resolve_request_headers", resolve_request_headers)
    for creds, headers, has in [
        (MlflowHostCreds("https://app.databricksapps.com/"), None, False),
        (MlflowHostCreds("https://app.databricksapps.com", token="t"), None, True),
        (MlflowHostCreds("https://app.databricksapps.com", username="u", password="p"), None, True),
        (MlflowHostCreds("https://app.databricksapps.com"), {"Authorization": "Basic x"}, True),
    ]:
        with pytest.raises(RuntimeError, match="stop here"):
            http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", extra_headers=headers, max_retries=0)
        assert found.pop() == internals.OutgoingRequest("https://app.databricksapps.com/api/2.0/mlflow/experiments/search", has)
    assert internals.calling_http_request() is None  # not inside http_request


def test_another_mlflow_release_warns_once_and_the_frame_walk_is_off(monkeypatch, caplog):
    real_version = importlib.metadata.version

    def version(name):
        if name in ("mlflow", "mlflow-skinny"):
            return "3.99.0"
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    try:
        with caplog.at_level(logging.WARNING, logger="mlflow_app.client"):
            importlib.reload(internals)
        assert internals.calling_http_request() is None
    finally:
        monkeypatch.undo()
        importlib.reload(internals)
    [record] = [r for r in caplog.records if r.name == "mlflow_app.client"]
    assert record.getMessage() == (
        "mlflow-app's mlflow client plugin was tested with MLflow 3.17; installed: 3.99.0. "
        "Install mlflow==3.17.* or an mlflow-app release made for 3.99.0. Until then it adds no Databricks token."
    )
    assert internals.UNTESTED is None


def test_the_version_check_compares_major_and_minor():
    assert internals.untested_mlflow("3.17.2") is None
    assert internals.untested_mlflow("3.18.0") and internals.untested_mlflow(None)
