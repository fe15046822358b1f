"""The local half of a deployment: from a checkout to a checked folder ready to upload, saying what it did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from deploy.render import UI_DIR_IN_SOURCE, databricks_app_config, render_app_yaml
from deploy.requirements import export_requirements, locked_mlflow
from deploy.staging import StagedApp, check_limits, prepare_stage_dir, stage_app
from deploy.ui_build import Downloader, pip_download, provide_ui


def app_yaml_for(project_dir: Path, extra_env: Iterable[tuple[str, str]] = ()) -> str:
    """The `app.yaml` a deployment of `project_dir` uploads (no download, no upload)."""
    mlflow = locked_mlflow(project_dir / "uv.lock")
    return render_app_yaml(databricks_app_config(ui_in_source=mlflow.needs_ui_upload, extra_env=extra_env))


def prepare_upload(
    project_dir: Path,
    dest: Path,
    *,
    extra_env: Iterable[tuple[str, str]] = (),
    ui_wheel: Path | None = None,
    echo: Callable[[str], None] = print,
    download: Downloader = pip_download,
) -> StagedApp:
    """Write into `dest` everything the app needs on the platform, and check it against the limits.

    Raises DeployError, before anything leaves the machine, when a step cannot be done or a file
    must not be uploaded.
    """
    mlflow = locked_mlflow(project_dir / "uv.lock")
    config = databricks_app_config(ui_in_source=mlflow.needs_ui_upload, extra_env=extra_env)  # checks --env early
    requirements = export_requirements(project_dir, mlflow)
    pins = sum(1 for line in requirements.splitlines() if line and not line.startswith("#"))
    echo(f"requirements.txt: {pins} packages at their uv.lock versions; {mlflow.describe()}")

    prepare_stage_dir(dest)
    ui = provide_ui(mlflow, dest / UI_DIR_IN_SOURCE, ui_wheel=ui_wheel, download=download)
    if ui is None:
        echo("UI assets: from the mlflow wheel pip installs on the platform (nothing to upload)")
    else:
        echo(f"UI assets: {ui.describe()}, uploaded as {UI_DIR_IN_SOURCE}/")

    staged = stage_app(project_dir, dest, app_yaml=render_app_yaml(config), requirements=requirements)
    check_limits(staged)
    echo(f"Staged {dest}: {staged.describe()}; no file over 10 MB, nothing secret")
    return staged
