"""The mlflow client plugin that signs requests to a deployed app with a Databricks OAuth token.

Registered as the `mlflow.request_header_provider` entry point `mlflow-app`: with our package
installed, `MLFLOW_TRACKING_URI=https://<app>.databricksapps.com` is all the mlflow client needs (plus
Databricks credentials databricks-sdk can find). MLflow asks every registered provider for headers
before each REST call it makes (`mlflow.utils.rest_utils.http_request`), whatever the host, and
catches and logs (as a one-line warning) anything a provider raises.

`resolve_request_headers()` is called without the request, so this provider reads the target URL
and credentials from the calling `http_request` frame, through launcher/client/mlflow_client_internals.py
(the MLflow internals it relies on, checked against the installed MLflow's version). It
adds the token only when that URL is a Databricks Apps URL or under MLFLOW_APP_DATABRICKS_TOKEN_URLS
(launcher/client/app_token.py), and the request carries no credential of the user's own
(MLFLOW_TRACKING_TOKEN, a user name and password, MLFLOW_TRACKING_AUTH, an Authorization header).
Should a later MLflow call it from elsewhere, or on an MLflow release that module was not tested
with (it then warns once), it falls back to the tracking URI.

MLflow imports this module in every client process (our own MLflow child included, whose calls go
to the workspace and never get a token from here): the standard library and mlflow only at the top.
"""

from __future__ import annotations

import os

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from launcher.client import mlflow_client_internals
from launcher.client.app_token import AppTokenError, DatabricksToken, TokenTargets, origin
from launcher.client.mlflow_client_internals import OutgoingRequest

CREDENTIAL_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH")


def outgoing_request() -> OutgoingRequest | None:
    """The REST call MLflow is preparing: from the calling http_request frame, else the tracking URI."""
    found = mlflow_client_internals.calling_http_request()
    if found is not None:
        return found
    import mlflow  # already imported: MLflow is what calls us

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    return OutgoingRequest(uri, has_credentials=any(os.environ.get(name) for name in CREDENTIAL_ENV))


class DatabricksAppTokenProvider(RequestHeaderProvider):
    """Adds `Authorization: Bearer <Databricks OAuth token>` to MLflow's calls to a Databricks app."""

    def __init__(self):
        # One per process (MLflow keeps one instance): the SDK config and its token are cached in it.
        self.token = DatabricksToken()

    def in_context(self) -> bool:
        return self._request_for_us() is not None

    def request_headers(self) -> dict[str, str]:
        request = self._request_for_us()
        if request is None:
            return {}
        try:
            return self.token.headers()
        except AppTokenError as exc:
            # MLflow logs this as one warning line and sends the request without the token.
            raise AppTokenError(f"mlflow-app: no Databricks token for {origin(request.url)}: {exc}") from None

    @staticmethod
    def _request_for_us() -> OutgoingRequest | None:
        request = outgoing_request()
        if request is None or request.has_credentials:
            return None
        try:
            targets = TokenTargets.from_environment()  # read each time: a notebook may set it after import
        except AppTokenError as exc:
            raise AppTokenError(f"mlflow-app: {exc}") from None
        return request if targets.allows(request.url) else None
