"""The start-up check: sign in to the workspace as the MLflow child will, and ask it who we are
(docs/databricks.md). A wrong secret or an unreachable host stops the launcher in one line.

databricks-sdk is imported only inside the check: it costs seconds, and `--help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from launcher.client.deadline import DeadlinePassed, call_with_deadline
from launcher.client.sdk_errors import sdk_reason
from launcher.redaction import Redactor
from launcher.settings import SettingsError

# The start-up check: how long one lookup may take, and the whole check.
CHECK_HTTP_TIMEOUT_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 45.0


class WorkspaceCheckFailed(SettingsError):
    """The workspace cannot be used; the message is one line that says what to change."""


@dataclass(frozen=True)
class WorkspaceIdentity:
    host: str
    user_name: str
    auth_type: str


def check_workspace(timeout: float = CHECK_TIMEOUT_SECONDS) -> WorkspaceIdentity:
    """Sign in to the workspace as the MLflow child will, and ask it who we are.

    Reads the same environment databricks-sdk reads. Raises WorkspaceCheckFailed, with one line
    naming what is wrong (missing variables, an unreachable host, refused credentials), within
    about `timeout` seconds.
    """
    redact = Redactor.from_environment()
    host = check_variables(os.environ)
    if host:
        check_reachable(host)
    # databricks-sdk's token request has no timeout of its own: a thread bounds the whole check.
    try:
        return call_with_deadline(signed_in_identity, timeout, "workspace-check")
    except DeadlinePassed:
        raise WorkspaceCheckFailed(
            f"DATABRICKS_HOST: {host or 'the workspace'} did not complete sign-in within {timeout:.0f} s; check that the workspace is up and reachable from here."
        ) from None
    except WorkspaceCheckFailed as exc:
        raise WorkspaceCheckFailed(redact(str(exc))) from None
    except Exception as exc:  # e.g. databricks-sdk missing: one line, not a traceback
        raise WorkspaceCheckFailed(redact(f"Databricks sign-in failed ({type(exc).__name__}: {sdk_reason(exc)}).")) from None


def check_variables(environ: Mapping[str, str]) -> str | None:
    """The workspace URL from the environment; raises if the variables cannot make a sign-in.

    None when the host is left to a databricks-sdk profile (~/.databrickscfg, DATABRICKS_CONFIG_*).
    """
    host = environ.get("DATABRICKS_HOST", "").strip()
    client_id, client_secret = environ.get("DATABRICKS_CLIENT_ID"), environ.get("DATABRICKS_CLIENT_SECRET")
    profile = environ.get("DATABRICKS_CONFIG_PROFILE") or environ.get("DATABRICKS_CONFIG_FILE")
    has_profile = bool(profile) or Path("~/.databrickscfg").expanduser().is_file()
    if not host:
        if has_profile:
            return None
        raise WorkspaceCheckFailed(
            "DATABRICKS_HOST is not set: the workspace stores need the workspace URL and credentials. Databricks Apps sets DATABRICKS_HOST, DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET; elsewhere set them (or DATABRICKS_TOKEN) yourself."
        )
    if "://" not in host:
        host = f"https://{host}"  # as databricks-sdk reads it
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: '{host}' is not a workspace URL; use https://<workspace>.cloud.databricks.com or similar.")
    if bool(client_id) != bool(client_secret):
        present, missing = ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET") if client_id else ("DATABRICKS_CLIENT_SECRET", "DATABRICKS_CLIENT_ID")
        raise WorkspaceCheckFailed(f"{missing} is not set but {present} is: OAuth sign-in needs both (the service principal's client ID and secret).")
    if not client_id and not environ.get("DATABRICKS_TOKEN") and not has_profile:
        raise WorkspaceCheckFailed(f"No credentials for {host}: set DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (a service principal, as Databricks Apps does) or DATABRICKS_TOKEN.")
    return host.rstrip("/")


def check_reachable(host: str) -> None:
    """The host answers HTTP at all (any status): tells an unreachable host from refused credentials."""
    import httpx  # here, not at the top: the CLI imports this module for its defaults

    url = f"{host}/.well-known/databricks-config"
    try:
        httpx.get(url, timeout=CHECK_HTTP_TIMEOUT_SECONDS)
    except httpx.TimeoutException:
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: {host} did not answer within {CHECK_HTTP_TIMEOUT_SECONDS:g} s; check the URL and that this machine can reach the workspace.") from None
    except httpx.HTTPError as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: cannot reach {host} ({reason}); check the URL and that this machine can reach the workspace.") from None


def signed_in_identity() -> WorkspaceIdentity:
    """databricks-sdk's unified auth, as in the child, with bounded timeouts; then `current_user.me()`."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config
    from databricks.sdk.errors import DatabricksError

    try:
        config = Config(http_timeout_seconds=CHECK_HTTP_TIMEOUT_SECONDS, retry_timeout_seconds=int(CHECK_HTTP_TIMEOUT_SECONDS))
    except ValueError as exc:
        raise WorkspaceCheckFailed(f"Databricks credentials: {sdk_reason(exc)}.") from None
    host = config.host or "the workspace"
    try:
        config.authenticate()  # OAuth: the token request, where a wrong client secret shows
    except ValueError as exc:
        raise WorkspaceCheckFailed(f"DATABRICKS_CLIENT_SECRET: {host} refused the credentials ({sdk_reason(exc)}); check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET.") from None
    except Exception as exc:  # noqa: BLE001 - a transport error inside databricks-sdk's token request
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: signing in to {host} failed ({type(exc).__name__}: {sdk_reason(exc)}).") from None
    try:
        me = WorkspaceClient(config=config).current_user.me()
    except DatabricksError as exc:
        raise WorkspaceCheckFailed(
            f"Databricks credentials: {host} refused them ({sdk_reason(exc)}); check the service principal (or DATABRICKS_TOKEN) and its access to the workspace."
        ) from None
    except Exception as exc:  # noqa: BLE001 - e.g. databricks-sdk's TimeoutError after its retries
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: {host} did not answer who we are ({type(exc).__name__}: {sdk_reason(exc)}).") from None
    return WorkspaceIdentity(host=host, user_name=me.user_name or me.display_name or "?", auth_type=config.auth_type or "?")
