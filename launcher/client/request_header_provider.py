"""The mlflow client plugin that signs requests to a deployed app with a Databricks OAuth token.

Registered as the `mlflow.request_header_provider` entry point `mlflow-app`: with our package
installed, `MLFLOW_TRACKING_URI=https://<app>.databricksapps.com` is all the mlflow client needs (plus
Databricks credentials databricks-sdk can find). MLflow asks every registered provider for headers
before each REST call it makes (`mlflow.utils.rest_utils.http_request`), whatever the host, and
catches and logs (as a one-line warning) anything a provider raises.

`resolve_request_headers()` is called without the request, so this provider reads the target URL
and credentials from the calling `http_request` frame, through launcher/client/mlflow_client_internals.py
(the MLflow internals it relies on, checked against the installed MLflow's version). It adds the
token only when that URL is an app of the workspace the caller's Databricks credentials are for, or
under MLFLOW_APP_DATABRICKS_TOKEN_URLS (launcher/client/app_token.py), and the request carries no
credential of the user's own (MLFLOW_TRACKING_TOKEN, a user name and password, MLFLOW_TRACKING_AUTH,
an Authorization header). When the target URL cannot be determined (a later MLflow that calls it from
elsewhere, or a release that module was not tested with, which warns once) it adds nothing: the
tracking URI alone would send the workspace's token to whatever else the process calls.

MLflow imports this module in every client process (our own MLflow child included, whose calls go
to the workspace and never get a token from here): the standard library and mlflow only at the top.
"""

from __future__ import annotations

import logging

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from launcher.client import mlflow_client_internals
from launcher.client.app_token import TOKEN_URLS_ENV, AppTokenError, DatabricksToken, Destination, OtherWorkspace, TokenTargets, origin
from launcher.client.mlflow_client_internals import OutgoingRequest

log = logging.getLogger("mlflow_app.client")


class DatabricksAppTokenProvider(RequestHeaderProvider):
    """Adds `Authorization: Bearer <Databricks OAuth token>` to MLflow's calls to a Databricks app."""

    def __init__(self):
        # One per process (MLflow keeps one instance): the SDK config and its token are cached in it.
        self.token = DatabricksToken()
        self._told: set[str] = set()  # app origins already warned about (another workspace's)

    def in_context(self) -> bool:
        return self._request_for_us() is not None

    def request_headers(self) -> dict[str, str]:
        found = self._request_for_us()
        if found is None:
            return {}
        request, destination = found
        return self.headers_for(request, destination)

    def headers_for(self, request: OutgoingRequest, destination: Destination) -> dict[str, str]:
        """The token for a request to `destination`; {} (and one warning per app) for another workspace's app."""
        try:
            return self.token.headers(destination.workspace_id)
        except OtherWorkspace as exc:
            app = origin(request.url)
            if app not in self._told:
                self._told.add(app)
                log.warning("mlflow-app: no Databricks token for %s: %s; list its URL in %s to send one anyway.", app, exc, TOKEN_URLS_ENV)
            return {}
        except AppTokenError as exc:
            # MLflow logs this as one warning line and sends the request without the token.
            raise AppTokenError(f"mlflow-app: no Databricks token for {origin(request.url)}: {exc}") from None

    @staticmethod
    def _request_for_us() -> tuple[OutgoingRequest, Destination] | None:
        request = mlflow_client_internals.calling_http_request()
        if request is None or request.has_credentials:
            return None
        try:
            targets = TokenTargets.from_environment()  # read each time: a notebook may set it after import
        except AppTokenError as exc:
            raise AppTokenError(f"mlflow-app: {exc}") from None
        destination = targets.destination(request.url)
        return (request, destination) if destination is not None else None
