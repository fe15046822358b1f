"""A Databricks OAuth token for calls to a deployed app, and the rule for which URLs may get one.

Databricks Apps lets a caller outside the browser in with `Authorization: Bearer <Databricks OAuth
token>`. The token comes from databricks-sdk's unified auth (DATABRICKS_HOST with a client ID and
secret or a token, a ~/.databrickscfg profile, `databricks auth login`), and it is a credential for
the whole workspace: it goes only to Databricks Apps hosts (https://*.databricksapps.com) and to the
URL prefixes the user lists in MLFLOW_APP_DATABRICKS_TOKEN_URLS, never anywhere else.

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

from launcher.client.deadline import DeadlinePassed, call_with_deadline
from launcher.client.sdk_errors import sdk_reason

TOKEN_URLS_ENV = "MLFLOW_APP_DATABRICKS_TOKEN_URLS"
# Databricks Apps URLs: <app>-<workspace id>.aws.databricksapps.com, <app>-<id>.<n>.azure.databricksapps.com,
# <app>-<id>.gcp.databricksapps.com (seen in published app URLs; the docs show only the domain).
APPS_DOMAIN = "databricksapps.com"
DEFAULT_PORTS = {"http": 80, "https": 443}
# databricks-sdk's sign-in has no timeout of its own on the token request: each fetch gets a deadline.
SIGN_IN_TIMEOUT_SECONDS = 30.0
# After a failed sign-in, calls within this many seconds get the same error without trying again.
FAILURE_MEMORY_SECONDS = 60.0
NO_CREDENTIALS_HINT = (
    "set DATABRICKS_HOST with DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (a service principal) or "
    "DATABRICKS_TOKEN, or name a ~/.databrickscfg profile with DATABRICKS_CONFIG_PROFILE (e.g. after "
    "`databricks auth login --host <workspace-url> --profile <name>`)"
)


class AppTokenError(Exception):
    """No token could be had; the message is one line that says what to set."""


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

    def allows(self, url: str) -> bool:
        """Whether `url` may carry the token. Plain http only when the user listed it."""
        try:
            target = UrlPrefix.parse(url)
        except ValueError:
            return False
        if target.scheme == "https" and is_apps_host(target.host):
            return True
        return any(prefix.covers(target) for prefix in self.prefixes)


def origin(url: str) -> str:
    """scheme://host[:port], for messages: paths and queries may hold names users chose, and URLs a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def is_apps_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith("." + APPS_DOMAIN)


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

    def headers(self) -> dict[str, str]:
        """{"Authorization": "Bearer …"}; raises AppTokenError (one line, no secret) when there is none."""
        with self._state_lock:
            if self._failure and time.monotonic() - self._failure[0] < FAILURE_MEMORY_SECONDS:
                raise self._failure[1]
        try:
            headers = with_deadline(self._authenticate, self.timeout, self._describe())
        except AppTokenError as exc:
            with self._state_lock:
                self._failure = (time.monotonic(), exc)
            raise
        with self._state_lock:
            self._failure = None
        return {"Authorization": headers["Authorization"]}

    def _authenticate(self) -> dict[str, str]:
        with self._config_lock:
            if self._config is None:
                self._config = self._new_config()
            config = self._config
        try:
            headers = config.authenticate()
        except Exception as exc:  # the SDK raises ValueError, requests' errors, or its own
            raise AppTokenError(f"Databricks sign-in failed for {self._describe()}: {sdk_reason(exc)}") from None
        if not headers.get("Authorization"):
            raise AppTokenError(f"Databricks sign-in for {self._describe()} gave no Authorization header; {NO_CREDENTIALS_HINT}.")
        return headers

    def _new_config(self):
        from databricks.sdk.core import Config  # seconds to import: only when a token is needed

        try:
            return Config(profile=self.profile) if self.profile else Config()
        except Exception as exc:
            reason = sdk_reason(exc)
            if "cannot configure default credentials" in reason or not reason:
                raise AppTokenError(f"No Databricks credentials found to call the app: {NO_CREDENTIALS_HINT}.") from None
            raise AppTokenError(f"Databricks credentials ({self._describe()}) cannot be used: {reason}") from None

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
