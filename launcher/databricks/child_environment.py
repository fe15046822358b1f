"""What the MLflow child needs to use a workspace's stores: MLflow's retry and timeout settings for
calls to the workspace, a databricks-sdk profile that bounds its own, where served artifacts go, and
the declaration of our `mlflow.app` plugin (launcher/inside_mlflow/workspace_plugin/)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from launcher.databricks.defaults import uses_workspace
from launcher.databricks.volumes import VOLUME_NAME
from launcher.inside_mlflow.workspace_plugin.experiments import EXPERIMENT_FOLDER_ENV
from launcher.settings import Settings, uri_scheme

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
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The folder of a volume that holds what the app serves, when the destination is a whole volume.
VOLUME_FOLDER = "mlflow"


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
    elif VOLUME_NAME.fullmatch(destination):
        destination = "dbfs:/Volumes/" + destination.replace(".", "/")
    # MLflow's volume repository refuses a volume's root; a folder of ours keeps the rest of the
    # volume free for other uses.
    if destination.startswith("dbfs:/Volumes/") and len(destination.rstrip("/").split("/")) == 5:
        destination = destination.rstrip("/") + "/" + VOLUME_FOLDER
    return destination


def child_app_arguments(settings: Settings) -> list[str]:
    """`mlflow server` arguments that load our adaptations for a workspace's stores
    (launcher/inside_mlflow/workspace_plugin/)."""
    from launcher.inside_mlflow.workspace_plugin.plugin import WORKSPACE_APP_NAME

    return ["--app-name", WORKSPACE_APP_NAME] if uses_workspace(settings) else []


def write_sdk_profile(directory: Path) -> Path:
    """A databricks-sdk config file holding our profile: timeouts only, no host, no credential."""
    path = directory / "databrickscfg"
    path.write_text(f"[{SDK_PROFILE}]\nhttp_timeout_seconds = {SDK_HTTP_TIMEOUT_SECONDS}\nretry_timeout_seconds = {SDK_RETRY_TIMEOUT_SECONDS}\n")
    return path


def write_child_plugin(directory: Path) -> Path:
    """A folder that declares our MLflow plugins to the child, returned for its PYTHONPATH: the
    `mlflow.app` the launcher names with `--app-name`, and the `mlflow.artifact_repository` for the
    `mlflow-artifacts` scheme inside the child (artifacts.py, proxied_repository).

    On Databricks Apps our packages run from the uploaded folder and are not installed, so no
    installed package metadata declares the entry points MLflow looks up; this minimal distribution
    does, wherever we run, and only in the child: declared in pyproject.toml, the repository would
    replace `mlflow-artifacts` in every user's client too.
    """
    from launcher.inside_mlflow.workspace_plugin.plugin import WORKSPACE_APP_NAME

    plugin = "launcher.inside_mlflow.workspace_plugin"
    info = directory / "child-plugin" / "mlflow_app_workspace-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlflow-app-workspace\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[mlflow.app]\n{WORKSPACE_APP_NAME} = {plugin}.plugin:create_workspace_app\n\n[mlflow.artifact_repository]\nmlflow-artifacts = {plugin}.artifacts:proxied_repository\n"
    )
    return info.parent


def uses_workspace_tracking(settings: Settings) -> bool:
    """Whether MLflow's tracking store (not only its registry) is a workspace's: experiments are then workspace paths."""
    uri = settings.backend_store_uri
    return bool(uri) and uri_scheme(uri) == "databricks"


def child_experiment_folder(settings: Settings) -> str | None:
    """The folder for experiments named without one (--experiment-folder), when the tracking store is a workspace's."""
    return settings.experiment_folder if uses_workspace_tracking(settings) else None


def workspace_environment(env: Mapping[str, str], sdk_profile: Path | None, child_plugin: Path | None = None, experiment_folder: str | None = None) -> dict[str, str]:
    """What to add to the child's environment `env` for a workspace store.

    The credentials (DATABRICKS_HOST, DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET or
    DATABRICKS_TOKEN) are already in `env`, passed through as the platform set them.
    """
    extra = {name: value for name, value in CHILD_HTTP_ENV.items() if not env.get(name)}
    # Always set, so that a value this process inherited does not reach the plugin unchecked.
    extra[EXPERIMENT_FOLDER_ENV] = experiment_folder or ""
    if child_plugin:
        # The plugin's declaration, and our packages (launcher.inside_mlflow) wherever the child's cwd is.
        paths = [str(child_plugin), str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
        extra["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    configured = env.get("DATABRICKS_CONFIG_PROFILE") or env.get("DATABRICKS_CONFIG_FILE")
    # Without DATABRICKS_HOST the credentials come from ~/.databrickscfg: our file would hide it.
    if sdk_profile and env.get("DATABRICKS_HOST") and not configured:
        extra["DATABRICKS_CONFIG_FILE"] = str(sdk_profile)
        extra["DATABRICKS_CONFIG_PROFILE"] = SDK_PROFILE
    return extra
