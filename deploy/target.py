"""What a deployment aims at (app name, volume, workspace folder, URLs) and the dry run's account of it,
without databricks-sdk: a dry run imports and sends nothing."""

from __future__ import annotations

import re

from deploy import DeployError
from deploy.render import VOLUME_RESOURCE
from deploy.staging import StagedApp
from launcher.databricks.volumes import VOLUME_NAME

APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
LOG_PATH = "/logz"  # where the platform shows an app's stdout and stderr


def check_app_name(name: str) -> str:
    if not APP_NAME.fullmatch(name):
        raise DeployError(f"--app-name: '{name}' is not an app name; use lowercase letters, digits and hyphens, starting with a letter or digit.")
    return name


def volume_full_name(volume: str) -> str:
    """`catalog.schema.volume`, from that form or from a /Volumes/catalog/schema/volume path."""
    if volume.startswith("/Volumes/"):
        parts = volume.strip("/").split("/")[1:]
        if len(parts) == 3 and all(parts):
            return ".".join(parts)
    elif VOLUME_NAME.fullmatch(volume):
        return volume
    raise DeployError(f"--volume: '{volume}' is not a Unity Catalog volume; use catalog.schema.volume.")


def default_source_path(user_name: str, app_name: str) -> str:
    return f"/Workspace/Users/{user_name}/mlflow-app/{app_name}"


def log_url(app_url: str) -> str:
    return app_url.rstrip("/") + LOG_PATH


def describe_plan(staged: StagedApp, *, app_name: str, volume: str | None, source_path: str | None, profile: str | None, timeout: float, compute_size: str | None = None) -> list[str]:
    """What a deployment would do, for --dry-run; nothing is looked up to say it."""
    where = f"profile {profile}" if profile else "databricks-sdk's default authentication (DATABRICKS_HOST, …, or the DEFAULT profile)"
    target = source_path or default_source_path("<you>", app_name)
    on = f" on {compute_size} compute" if compute_size else ""
    create = (
        f"create app {app_name}{on} with volume {volume} as resource '{VOLUME_RESOURCE}' (WRITE_VOLUME) if it does not exist"
        if volume
        else f"use the existing app {app_name} and its '{VOLUME_RESOURCE}' resource (without --volume it is not created)"
    )
    return [
        "Dry run: nothing was sent to the workspace. A deployment would:",
        f"  - connect with {where}",
        f"  - upload {len(staged.files)} files ({staged.total_size / 1e6:.2f} MB) to {target} (ImportFormat.AUTO, overwrite)",
        f"  - {create}",
        f"  - deploy {target} in SNAPSHOT mode and wait up to {timeout:.0f} s",
        f"  - print the app's URL and its log at <app url>{LOG_PATH}",
    ]
