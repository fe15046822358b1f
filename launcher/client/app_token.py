"""A Databricks OAuth token for calls to a deployed app, and the rule for which URLs may get one.

Databricks Apps lets a caller outside the browser in with `Authorization: Bearer <Databricks OAuth
token>`, and refuses personal access tokens and Entra ID tokens (doc). The token comes from
databricks-sdk's unified auth (a service principal's client ID and secret, a ~/.databrickscfg
profile, `databricks auth login`) through `Config.oauth_token()`; credentials that give another kind
of token are an error saying what to use (launcher/client/auth_types.py), not a silent 401.

The token is a credential for the whole workspace. It goes only to the apps of the workspace the
credentials are for (an app's host name carries its workspace id:
https://<app>-<workspace id>.<region>.databricksapps.com, doc), and to the URL prefixes the user
lists in MLFLOW_APP_DATABRICKS_TOKEN_URLS (an explicit choice, e.g. a custom domain); never
anywhere else. For an app of another workspace the token is never sent, and not even fetched
where the Config knows its workspace id.

Used by the mlflow client's request-header plugin (launcher/client/request_header_provider.py) and by
`mlflow-app call`. Every mlflow client process with our package installed imports this module: it
imports only the standard library at the top, and databricks-sdk (seconds to import) on first use.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from launcher.client.auth_types import NO_OAUTH_TOKEN_MARKER, not_accepted, refusal
from launcher.client.deadline import DeadlinePassed, call_with_deadline
from launcher.client.sdk_errors import sdk_reason

TOKEN_URLS_ENV = "MLFLOW_APP_DATABRICKS_TOKEN_URLS"
# Databricks Apps URLs: https://<app>-<workspace id>.<region>.databricksapps.com (doc), e.g.
# <app>-<id>.aws.databricksapps.com, <app>-<id>.<n>.azure.databricksapps.com (seen in published URLs).
APPS_DOMAIN = "databricksapps.com"
DEFAULT_PORTS = {"http": 80, "https": 443}
# databricks-sdk's sign-in has no timeout of its own on the token request: each fetch gets a deadline.
SIGN_IN_TIMEOUT_SECONDS = 30.0
# After a failed sign-in, calls within this many seconds get the same error without trying again.
FAILURE_MEMORY_SECONDS = 60.0
NO_CREDENTIALS_HINT = (
    "set DATABRICKS_HOST with DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (a service principal), "
    "or name a ~/.databrickscfg profile with DATABRICKS_CONFIG_PROFILE (e.g. after "
    "`databricks auth login --host <workspace-url> --profile <name>`)"
)


class AppTokenError(Exception):
    """No token could be had; the message is one line that says what to set."""


class OtherWorkspace(AppTokenError):
    """The app belongs to another workspace than the credentials: no token was fetched for it."""


@dataclass(frozen=True)
class UrlPrefix:
    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" for the whole host

    @classmethod
    def parse(cls, url: str) -> UrlPrefix:
        """Raises ValueError for anything but an http(s) URL with a host."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"'{url}' is not an http(s) URL")
        return cls(scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[scheme], parts.path.rstrip("/"))

    def covers(self, url: UrlPrefix) -> bool:
        """Same scheme, host and port, and the path at or below ours (whole segments: /a covers /a/b, not /ab)."""
        same_origin = (self.scheme, self.host, self.port) == (url.scheme, url.host, url.port)
        return same_origin and (url.path == self.path or url.path.startswith(self.path + "/"))


@dataclass(frozen=True)
class Destination:
    """A URL the token may go to, and the workspace its app belongs to (None: a prefix the user listed)."""

    workspace_id: str | None


@dataclass(frozen=True)
class TokenTargets:
    """Which URLs a Databricks token may be sent to: https Databricks Apps hosts, plus configured prefixes."""

    prefixes: tuple[UrlPrefix, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TokenTargets:
        """Reads MLFLOW_APP_DATABRICKS_TOKEN_URLS (comma-separated URL prefixes); raises AppTokenError on a bad entry."""
        value = (os.environ if environ is None else environ).get(TOKEN_URLS_ENV, "")
        prefixes = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                prefixes.append(UrlPrefix.parse(item))
            except ValueError as exc:
                raise AppTokenError(f"{TOKEN_URLS_ENV}: {exc}; list http(s) URL prefixes separated by commas.") from None
        return cls(tuple(prefixes))

    def destination(self, url: str) -> Destination | None:
        """Whether `url` may carry the token, and for which workspace's credentials; None: never.
        A listed prefix is the user's choice (any workspace); plain http only when listed."""
        try:
            target = UrlPrefix.parse(url)
        except ValueError:
            return None
        if any(prefix.covers(target) for prefix in self.prefixes):
            return Destination(None)
        if target.scheme == "https" and (workspace_id := apps_workspace_id(target.host)):
            return Destination(workspace_id)
        return None


def origin(url: str) -> str:
    """scheme://host[:port], for messages: paths and queries may hold names users chose, and URLs a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def apps_workspace_id(host: str) -> str | None:
    """The workspace id in a Databricks Apps host name (<app>-<workspace id>.<region>.databricksapps.com),
    or None for any other host, or an Apps host that names none."""
    host = host.lower().rstrip(".")
    if not host.endswith("." + APPS_DOMAIN):
        return None
    _, dash, workspace_id = host.split(".", 1)[0].rpartition("-")
    return workspace_id if dash and workspace_id.isdigit() else None


def config_workspace_id(config) -> str:
    """The workspace a databricks-sdk Config signs in to: its `workspace_id` (DATABRICKS_WORKSPACE_ID,
    the profile, or the host's metadata, read when the Config was built), else what the workspace
    says (`WorkspaceClient.get_workspace_id()`: SCIM /Me's X-Databricks-Org-Id, one call, for older
    control planes whose metadata has no id). Raises what the SDK raises."""
    if config.workspace_id:
        return str(config.workspace_id)
    from databricks.sdk import WorkspaceClient  # seconds to import: only when the metadata did not say

    return str(WorkspaceClient(config=config).get_workspace_id())


class DatabricksToken:
    """`Authorization` headers from databricks-sdk's unified auth, for one profile (None: the default chain).

    The SDK's Config is built once (its host metadata and OIDC discovery happen then) and kept; the
    SDK refreshes the OAuth token itself when it nears expiry. Safe to share between threads.
    """

    def __init__(self, profile: str | None = None, timeout: float = SIGN_IN_TIMEOUT_SECONDS):
        self.profile = profile
        self.timeout = timeout
        self._config = None
        self._config_lock = threading.Lock()  # held while the Config is built (network): only in sign-in threads
        self._state_lock = threading.Lock()  # never held across network calls
        self._failure: tuple[float, AppTokenError] | None = None
        self._workspace_id: str | None = None  # the credentials' workspace, once known

    def headers(self, workspace_id: str | None = None) -> dict[str, str]:
        """{"Authorization": "Bearer <Databricks OAuth token>"}, for an app of `workspace_id` (None: any,
        the user listed its URL). Raises OtherWorkspace when the credentials are another workspace's,
        and AppTokenError (one line, no secret) when there is no token."""
        with self._state_lock:
            if self._failure and time.monotonic() - self._failure[0] < FAILURE_MEMORY_SECONDS:
                raise self._failure[1]
        try:
            authorization = with_deadline(lambda: self._sign_in(workspace_id), self.timeout, self._describe())
        except OtherWorkspace:
            raise  # no failure: the credentials are fine for their own workspace's apps
        except AppTokenError as exc:
            with self._state_lock:
                self._failure = (time.monotonic(), exc)
            raise
        with self._state_lock:
            self._failure = None
        return {"Authorization": authorization}

    def _sign_in(self, workspace_id: str | None) -> str:
        with self._config_lock:
            if self._config is None:
                self._config = self._new_config()
            config = self._config
        if reason := refusal(config.auth_type, config.host, config.azure_client_id):
            raise AppTokenError(reason)
        if workspace_id is not None:
            self._check_workspace(config, workspace_id)
        try:
            if config.auth_type == "external-browser":
                # A Databricks OAuth token, which databricks-sdk 0.156 does not expose through oauth_token().
                authorization = config.authenticate().get("Authorization", "")
            else:
                authorization = f"Bearer {config.oauth_token().access_token}"
        except ValueError as exc:
            if NO_OAUTH_TOKEN_MARKER in str(exc):
                raise AppTokenError(not_accepted(config.auth_type, config.host, "no OAuth token")) from None
            raise AppTokenError(f"Databricks sign-in failed for {self._describe()}: {sdk_reason(exc)}") from None
        except Exception as exc:  # requests' errors, or the SDK's own
            raise AppTokenError(f"Databricks sign-in failed for {self._describe()}: {sdk_reason(exc)}") from None
        if not authorization.removeprefix("Bearer").strip():
            raise AppTokenError(f"Databricks sign-in for {self._describe()} gave no token; {NO_CREDENTIALS_HINT}.")
        return authorization

    def _check_workspace(self, config, app_workspace_id: str) -> None:
        """Before the token is sent: the app must belong to the credentials' workspace."""
        if self._workspace_id is None:
            try:
                self._workspace_id = config_workspace_id(config)
            except (KeyError, TypeError, ValueError):  # the answer had no X-Databricks-Org-Id (the SDK's int(None))
                self._unknown_workspace("the workspace did not say")
            except Exception as exc:  # the SDK's errors (e.g. no permission for /Me), requests' errors
                self._unknown_workspace(sdk_reason(exc))
        own = self._workspace_id
        if own != app_workspace_id:
            raise OtherWorkspace(f"the app belongs to workspace {app_workspace_id}, and the Databricks credentials ({self._describe()}) to workspace {own}")

    def _new_config(self):
        from databricks.sdk.core import Config  # seconds to import: only when a token is needed

        try:
            return Config(profile=self.profile) if self.profile else Config()
        except Exception as exc:
            reason = sdk_reason(exc)
            if "cannot configure default credentials" in reason or not reason:
                raise AppTokenError(f"No Databricks credentials found to call the app: {NO_CREDENTIALS_HINT}.") from None
            raise AppTokenError(f"Databricks credentials ({self._describe()}) cannot be used: {reason}") from None

    def _unknown_workspace(self, reason: str) -> None:
        raise AppTokenError(
            f"cannot tell which workspace the Databricks credentials ({self._describe()}) are for ({reason}), so no token goes to an app: "
            f"set DATABRICKS_WORKSPACE_ID (the number in the app's URL), or list the app's URL in {TOKEN_URLS_ENV}."
        )

    def _describe(self) -> str:
        if self.profile:
            return f"profile {self.profile}"
        host = self._config.host if self._config is not None else os.environ.get("DATABRICKS_HOST")
        return host or "databricks-sdk's default credentials"


def with_deadline(function, timeout: float, what: str):
    """`function()` within `timeout` seconds; every failure an AppTokenError of one line."""
    try:
        return call_with_deadline(function, timeout, "mlflow-app-databricks-token")
    except DeadlinePassed:
        raise AppTokenError(f"Databricks sign-in ({what}) did not finish within {timeout:g} s; check that the workspace is reachable from here.") from None
    except AppTokenError:
        raise
    except Exception as exc:
        raise AppTokenError(f"Databricks sign-in failed for {what}: {sdk_reason(exc)}") from None
