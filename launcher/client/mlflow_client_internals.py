"""The MLflow client internals the token provider (request_header_provider.py) relies on, in one place.

MLflow asks request header providers for headers without saying which request they are for, and
the provider must know: it adds a token only to calls that go to a Databricks app and carry no
credential of the user's own. So it reads the request from the caller's frame, relying on:
- `mlflow.utils.rest_utils.http_request` (a function named `http_request` in that module) calling
  `mlflow.tracking.request_header.registry.resolve_request_headers()` before it sends, within
  `FRAME_SEARCH_DEPTH` frames of the provider's caller;
- that frame's locals: `url` (str, the host and endpoint the call goes to), `host_creds` (an
  `MlflowHostCreds`) and `extra_headers` (a dict, or None);
- `MlflowHostCreds`' credential attributes, `CREDENTIAL_ATTRIBUTES` (all of its fields but these:
  `NON_CREDENTIAL_ATTRIBUTES`).

MLflow's public alternative, a `RequestAuthProvider` (entry point `mlflow.request_auth_provider`),
sees the request, but MLflow uses one only when the user sets `MLFLOW_TRACKING_AUTH` to its name:
a new setting for every user, so it is not used.

This runs inside users' clients: on an MLflow release other than `TESTED_MLFLOW` it warns once (one
log line) and does nothing, `calling_http_request()` finds no request, and the provider adds no
token (the tracking URI alone cannot say where a call goes). tests/launcher/client/test_mlflow_client_internals.py
holds MLflow to all of the above.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from dataclasses import dataclass

from launcher.client.mlflow_release import untested_message

log = logging.getLogger("mlflow_app.client")

# How far above the caller of calling_http_request to look: MLflow's http_request is 5 frames up
# from there (outgoing_request, _request_for_us, in_context or request_headers, resolve_request_headers).
FRAME_SEARCH_DEPTH = 8
HTTP_REQUEST_MODULE, HTTP_REQUEST_FUNCTION = "mlflow.utils.rest_utils", "http_request"
# MlflowHostCreds' attributes with which MLflow authenticates a request itself.
CREDENTIAL_ATTRIBUTES = ("username", "password", "token", "auth", "aws_sigv4", "use_databricks_sdk", "client_secret")
NON_CREDENTIAL_ATTRIBUTES = ("host", "ignore_tls_verification", "client_cert_path", "server_cert_path", "use_secret_scope_token",
                             "databricks_auth_profile", "workspace_id", "client_id")  # fmt: skip


@dataclass(frozen=True)
class OutgoingRequest:
    url: str
    has_credentials: bool  # the user's own: MLflow authenticates the call itself, we add nothing


def installed_mlflow() -> str | None:
    """The installed MLflow's version: the full package, else the client-only ones."""
    for distribution in ("mlflow", "mlflow-skinny", "mlflow-tracing"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def untested_mlflow(installed: str | None) -> str | None:
    """The one-line warning for `installed` (an MLflow version); None for a tested release."""
    return untested_message(installed, "mlflow client plugin", then="Until then it adds no Databricks token.")


UNTESTED = untested_mlflow(installed_mlflow())  # checked once, on import
if UNTESTED:
    log.warning(UNTESTED)


def calling_http_request() -> OutgoingRequest | None:
    """The REST call MLflow's `http_request` is preparing, read from its frame above our caller;
    None when there is none (or on an MLflow release this was not tested with)."""
    if UNTESTED:
        return None
    frame = sys._getframe(1)
    try:
        for _ in range(FRAME_SEARCH_DEPTH):
            if frame is None:
                return None
            if frame.f_code.co_name == HTTP_REQUEST_FUNCTION and frame.f_globals.get("__name__") == HTTP_REQUEST_MODULE:
                local = frame.f_locals
                url = local.get("url")
                if not isinstance(url, str):
                    return None
                return OutgoingRequest(url, has_credentials(local.get("host_creds"), local.get("extra_headers")))
            frame = frame.f_back
        return None
    finally:
        del frame  # frames hold every local of the call: drop the reference at once


def has_credentials(host_creds, extra_headers) -> bool:
    """Whether MLflow will authenticate this request itself (and would replace our header anyway)."""
    if extra_headers and any(name.lower() == "authorization" for name in extra_headers):
        return True
    if host_creds is None:
        return False
    user_password = getattr(host_creds, "username", None) and getattr(host_creds, "password", None)
    others = [name for name in CREDENTIAL_ATTRIBUTES if name not in ("username", "password")]
    return bool(user_password or any(getattr(host_creds, name, None) for name in others))
