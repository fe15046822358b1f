"""Databricks mode: the defaults on Databricks Apps, what the MLflow child needs to use a workspace's
stores, and the start-up check of the workspace and its credentials (docs/databricks.md).

databricks-sdk is imported only inside the check: it costs seconds, and `--help` stays fast.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from launcher.deadline import DeadlinePassed, call_with_deadline
from launcher.settings import Settings, SettingsError, on_databricks_apps, uri_scheme
from proxy.redaction import Redactor

log = logging.getLogger("mlflow_app.launcher")

# Store URIs served by a workspace (`databricks://<profile>` included): these need the check and
# the child settings below. `uc` is the open-source Unity Catalog server, not a workspace.
WORKSPACE_SCHEMES = frozenset({"databricks", "databricks-uc"})

# MLflow's client calls to the workspace, from inside the child. With MLflow's and databricks-sdk's
# defaults, one call to a failing workspace held an MLflow worker thread for minutes, measured
# against the stand-in: answering 500, 256 s (7 retries, backoff factor 2); answering 503, 501 s
# (databricks-sdk retries it within MLflow's 500 s budget); hung, 521 s (60 s per attempt, same
# budget); refusing connections, over 300 s per call (databricks-sdk's own budget for the host
# lookup that MLflow repeats on every call). The front answers 504 after --upstream-timeout (60 s)
# anyway. With these and the profile below: 3 s, 11 s, 16 s and 24 s, so the client gets MLflow's
# own error and the worker is free again well within the upstream timeout. A value already in
# the environment wins.
CHILD_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # 3 attempts, 0 s then ~2 s apart (MLflow's own retry)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",  # per attempt, for calls made without databricks-sdk
    # The retry budget of each databricks-sdk call MLflow makes (the path every workspace call takes).
    "MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT": "10",
}
# databricks-sdk reads its per-attempt timeout and retry budget from a profile only, never from
# the environment, and MLflow builds a new SDK config (with a host metadata lookup) for every call.
# The child gets a profile of these two values alone; host and credentials still come from the
# environment. Only when no profile or config file is configured already (then that one rules).
SDK_PROFILE = "mlflow-app"
SDK_HTTP_TIMEOUT_SECONDS = 15
SDK_RETRY_TIMEOUT_SECONDS = 10

# The folder that holds our packages (launcher/, proxy/), installed or uploaded.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The folder of a volume that holds what the app serves, when the destination is a whole volume.
VOLUME_FOLDER = "mlflow"
# A Unity Catalog volume by its three-part name.
VOLUME_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

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


# --- defaults ---------------------------------------------------------------------------------


def default_backend_store_uri() -> str | None:
    """The workspace's tracking store on Databricks Apps; elsewhere None (the embedded SQLite)."""
    return "databricks" if on_databricks_apps() else None


def default_registry_store_uri() -> str | None:
    """Unity Catalog on Databricks Apps; elsewhere None (the backend store)."""
    return "databricks-uc" if on_databricks_apps() else None


def default_log_format() -> str:
    """JSON on Databricks Apps, whose log collector keeps stdout; text for people elsewhere."""
    return "json" if on_databricks_apps() else "text"


def uses_workspace(settings: Settings) -> bool:
    """Whether MLflow's tracking or registry store is a Databricks workspace."""
    uris = (settings.backend_store_uri, settings.registry_store_uri)
    return any(uri and uri_scheme(uri) in WORKSPACE_SCHEMES for uri in uris)


def artifacts_warning(settings: Settings) -> str | None:
    """On Databricks Apps, served artifacts without a destination land on the app's local disk."""
    if on_databricks_apps() and settings.serve_artifacts and not settings.artifacts_destination:
        return (
            f"artifacts go to {settings.effective_artifacts_destination} on the app's own disk and are lost when it "
            "restarts; set --artifacts-destination (MLFLOW_ARTIFACTS_DESTINATION) to a Unity Catalog volume"
        )
    return None


# --- the MLflow child -------------------------------------------------------------------------


def child_artifacts_destination(settings: Settings) -> str:
    """Where the child keeps served artifacts, as MLflow's repositories name it.

    A Unity Catalog volume given as a path (`/Volumes/<catalog>/<schema>/<volume>`, which is how
    Databricks Apps passes a volume resource) or as a name (`<catalog>.<schema>.<volume>`) becomes
    `dbfs:/Volumes/...`, the form MLflow reaches through the Files API with the app's credentials;
    as a plain path it would be taken as a folder on the app's own disk. A whole volume gets a
    folder, `mlflow`.
    """
    destination = settings.effective_artifacts_destination
    if not uses_workspace(settings) or not settings.artifacts_destination:
        return destination
    if destination.startswith("/Volumes/"):
        destination = "dbfs:" + destination
    elif VOLUME_NAME.match(destination):
        destination = "dbfs:/Volumes/" + destination.replace(".", "/")
    # MLflow's volume repository refuses a volume's root; a folder of ours keeps the rest of the
    # volume free for other uses.
    if destination.startswith("dbfs:/Volumes/") and len(destination.rstrip("/").split("/")) == 5:
        destination = destination.rstrip("/") + "/" + VOLUME_FOLDER
    return destination


def child_app_arguments(settings: Settings) -> list[str]:
    """`mlflow server` arguments that load our adaptations for a workspace's stores (launcher/child/)."""
    from launcher.child.app import WORKSPACE_APP_NAME

    return ["--app-name", WORKSPACE_APP_NAME] if uses_workspace(settings) else []



def write_sdk_profile(directory: Path) -> Path:
    """A databricks-sdk config file holding our profile: timeouts only, no host, no credential."""
    path = directory / "databrickscfg"
    path.write_text(
        f"[{SDK_PROFILE}]\nhttp_timeout_seconds = {SDK_HTTP_TIMEOUT_SECONDS}\nretry_timeout_seconds = {SDK_RETRY_TIMEOUT_SECONDS}\n"
    )
    return path


def write_child_plugin(directory: Path) -> Path:
    """A folder that declares our `mlflow.app` plugin to the child, returned for its PYTHONPATH.

    On Databricks Apps our packages run from the uploaded folder and are not installed, so no
    installed package metadata declares the entry point `mlflow server --app-name` looks up; this
    minimal distribution does, wherever we run.
    """
    from launcher.child.app import WORKSPACE_APP_NAME

    info = directory / "child-plugin" / "mlflow_app_workspace-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlflow-app-workspace\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mlflow.app]\n{WORKSPACE_APP_NAME} = launcher.child.app:create_app\n")
    return info.parent


def workspace_environment(env: Mapping[str, str], sdk_profile: Path | None, child_plugin: Path | None = None) -> dict[str, str]:
    """What to add to the child's environment `env` for a workspace store.

    The credentials (DATABRICKS_HOST, DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET or
    DATABRICKS_TOKEN) are already in `env`, passed through as the platform set them.
    """
    extra = {name: value for name, value in CHILD_HTTP_ENV.items() if not env.get(name)}
    if child_plugin:
        # The plugin's declaration, and our packages (launcher.child) wherever the child's cwd is.
        paths = [str(child_plugin), str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
        extra["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    configured = env.get("DATABRICKS_CONFIG_PROFILE") or env.get("DATABRICKS_CONFIG_FILE")
    # Without DATABRICKS_HOST the credentials come from ~/.databrickscfg: our file would hide it.
    if sdk_profile and env.get("DATABRICKS_HOST") and not configured:
        extra["DATABRICKS_CONFIG_FILE"] = str(sdk_profile)
        extra["DATABRICKS_CONFIG_PROFILE"] = SDK_PROFILE
    return extra


# --- the start-up check -----------------------------------------------------------------------


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
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: {host or 'the workspace'} did not complete sign-in within {timeout:.0f} s; check that the workspace is up and reachable from here.") from None
    except WorkspaceCheckFailed as exc:
        raise WorkspaceCheckFailed(redact(str(exc))) from None
    except Exception as exc:  # e.g. databricks-sdk missing: one line, not a traceback
        raise WorkspaceCheckFailed(redact(f"Databricks sign-in failed ({type(exc).__name__}: {first_line(exc)}).")) from None


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
        raise WorkspaceCheckFailed("DATABRICKS_HOST is not set: the workspace stores need the workspace URL and credentials. Databricks Apps sets DATABRICKS_HOST, DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET; elsewhere set them (or DATABRICKS_TOKEN) yourself.")
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
        raise WorkspaceCheckFailed(f"Databricks credentials: {first_line(exc)}.") from None
    host = config.host or "the workspace"
    try:
        config.authenticate()  # OAuth: the token request, where a wrong client secret shows
    except ValueError as exc:
        raise WorkspaceCheckFailed(f"DATABRICKS_CLIENT_SECRET: {host} refused the credentials ({first_line(exc)}); check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET.") from None
    except Exception as exc:  # noqa: BLE001 - a transport error inside databricks-sdk's token request
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: signing in to {host} failed ({type(exc).__name__}: {first_line(exc)}).") from None
    try:
        me = WorkspaceClient(config=config).current_user.me()
    except DatabricksError as exc:
        raise WorkspaceCheckFailed(f"Databricks credentials: {host} refused them ({first_line(exc)}); check the service principal (or DATABRICKS_TOKEN) and its access to the workspace.") from None
    except Exception as exc:  # noqa: BLE001 - e.g. databricks-sdk's TimeoutError after its retries
        raise WorkspaceCheckFailed(f"DATABRICKS_HOST: {host} did not answer who we are ({type(exc).__name__}: {first_line(exc)}).") from None
    return WorkspaceIdentity(host=host, user_name=me.user_name or me.display_name or "?", auth_type=config.auth_type or "?")


def first_line(exc: BaseException) -> str:
    """An exception's message on one line, without databricks-sdk's trailing config dump."""
    text = " ".join(str(exc).split())
    for marker in (". Config: ", " Config: "):
        text = text.split(marker)[0]
    return text.rstrip(".") or type(exc).__name__
