"""The workspace folder for experiments named without one (`--experiment-folder`), made at start.

A workspace creates an experiment only in an existing folder the caller may create in, so the
folder the MLflow child puts relative names in (launcher/inside_mlflow/workspace_plugin/experiments.py)
is made here, with the app's own credentials, before MLflow starts: `w.workspace.get_status`, then
`w.workspace.mkdirs` when it is missing. Bounded in time like the sign-in (sign_in.py). When the app's
principal may not make it, or the workspace does not answer, that is one warning line naming the
folder and what to grant, and the app starts anyway: experiments with full paths still work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from launcher.client.deadline import DeadlinePassed, call_with_deadline
from launcher.client.sdk_errors import sdk_reason
from launcher.databricks.child_environment import child_experiment_folder, uses_workspace_tracking
from launcher.redaction import Redactor
from launcher.settings import Settings

log = logging.getLogger("mlflow_app.launcher")

FOLDER_HTTP_TIMEOUT_SECONDS = 10.0
FOLDER_TIMEOUT_SECONDS = 30.0
# The folder permission that lets a principal create items in a folder, by the Databricks docs'
# folder ACL table (unverified on a workspace: it may accept CAN EDIT).
CREATE_PERMISSION = "CAN MANAGE"


@dataclass(frozen=True)
class FolderOutcome:
    ready: bool  # the folder exists (found or made)
    message: str  # one line for the log


def prepare_experiment_folder(settings: Settings, principal: str = "the app's service principal") -> FolderOutcome | None:
    """Make the experiment folder if it is missing, and log one line saying how it went.

    None (and an info line when the tracking store is a workspace's) when there is no folder to make."""
    folder = child_experiment_folder(settings)
    if folder is None:
        if uses_workspace_tracking(settings):
            log.info(
                "no --experiment-folder: experiments named without a workspace path, and MLflow's default experiment (0), are refused; "
                "set --experiment-folder (MLFLOW_APP_EXPERIMENT_FOLDER) to a workspace folder to place them there"
            )
        return None
    outcome = ensure_folder(folder, principal)
    (log.info if outcome.ready else log.warning)("%s", outcome.message)
    return outcome


def ensure_folder(folder: str, principal: str = "the app's service principal", timeout: float = FOLDER_TIMEOUT_SECONDS) -> FolderOutcome:
    """`folder` in the workspace, made (with its parents) when missing; never raises."""
    redact = Redactor.from_environment()
    try:
        return call_with_deadline(lambda: _ensure(folder, principal), timeout, "experiment-folder")
    except DeadlinePassed:
        return FolderOutcome(False, f"experiment folder {folder}: the workspace did not answer within {timeout:.0f} s; experiments named without a folder will fail until it exists")
    except Exception as exc:  # noqa: BLE001 - e.g. databricks-sdk missing: one line, never a traceback
        return FolderOutcome(False, redact(f"experiment folder {folder}: not checked ({type(exc).__name__}: {sdk_reason(exc)})"))


def _ensure(folder: str, principal: str) -> FolderOutcome:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config
    from databricks.sdk.errors import NotFound, PermissionDenied
    from databricks.sdk.service.workspace import ObjectType

    config = Config(http_timeout_seconds=FOLDER_HTTP_TIMEOUT_SECONDS, retry_timeout_seconds=int(FOLDER_HTTP_TIMEOUT_SECONDS))
    workspace = WorkspaceClient(config=config).workspace
    parent = folder.rsplit("/", 1)[0] or "/"
    refused = (
        f"experiment folder {folder}: {principal} may not create it ({{reason}}); give it {CREATE_PERMISSION} on {parent}, or create "
        f"{folder} and give it {CREATE_PERMISSION} there. Until then experiments named without a folder, and the default "
        "experiment, fail with 403"
    )
    try:
        found = workspace.get_status(folder)
    except NotFound:
        found = None
    except PermissionDenied as exc:
        return FolderOutcome(False, refused.format(reason=sdk_reason(exc)))
    if found is not None:
        if found.object_type != ObjectType.DIRECTORY:
            return FolderOutcome(False, f"experiment folder {folder}: something other than a folder is there; choose another --experiment-folder")
        return FolderOutcome(True, f"experiment folder {folder}: experiments named without a folder go there")
    try:
        workspace.mkdirs(folder)
    except PermissionDenied as exc:
        return FolderOutcome(False, refused.format(reason=sdk_reason(exc)))
    return FolderOutcome(True, f"experiment folder {folder}: created; experiments named without a folder go there")
