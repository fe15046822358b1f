"""The `mlflow-app` command line."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click

from launcher.settings import Settings, SettingsError, validate
from launcher.settings_table import SERVE_SETTINGS, serve_options, split_list
from proxy.edge.forwarded import parse_proxy_addresses


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-app")
def main() -> None:
    """mlflow-app: the open-source MLflow tracking server behind a production front process."""


@main.command()
@serve_options
def serve(**options) -> None:
    """Run MLflow behind the front on one port.

    \b
    With no options: an embedded server (SQLite and artifacts in ./mlflow-data) at
    http://127.0.0.1:8000, UI included. Every option also reads the environment variable
    shown in the README's configuration table.
    """
    try:
        settings = settings_from_options(options)
        validate(settings)
        try:
            from launcher.server import run_server as run  # imported late: --help stays fast
        except ImportError as exc:
            if type(exc).__name__ != "UntestedUvicorn":  # proxy/edge/http_protocol.py: its one line says what to install
                raise
            raise click.ClickException(str(exc)) from None
        run(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def settings_from_options(options: dict) -> Settings:
    """`Settings` from `serve`'s parsed options: a comma-separated list absent or empty keeps its default."""
    values = dict(options)
    for row in SERVE_SETTINGS:
        if row.is_list:
            items = split_list(values.pop(row.field))
            if not items:
                continue
            if row.field == "forwarded_allow_ips":
                try:
                    items = parse_proxy_addresses(",".join(items))
                except ValueError as exc:
                    raise SettingsError(f"{row.option}: {exc}.") from None
            values[row.field] = items
    return Settings(**values)


# Databricks Apps: render, stage, deploy. deploy/ is imported inside each command, so --help stays fast.
PROJECT_DIR = Path(__file__).resolve().parent.parent  # the checkout whose uv.lock and packages are deployed
STAGE_DIR = Path("build") / "databricks-app"  # inside --project-dir; databricks.yml's source_code_path


def app_source_options(command):
    """--env and --project-dir: what the app is made of, for render, stage and deploy alike."""
    command = click.option(
        "--project-dir",
        show_envvar=True,
        envvar="MLFLOW_APP_PROJECT_DIR",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        default=PROJECT_DIR,
        show_default="this checkout",
        help="The mlflow-app checkout whose uv.lock and packages are deployed.",
    )(command)
    return click.option(
        "--env",
        "extra_env",
        multiple=True,
        metavar="NAME=VALUE",
        help="Another `mlflow-app serve` setting for the app, as its environment variable (e.g. MLFLOW_WORKERS=2); "
        "repeatable; replaces ours of the same name. Never a credential: app.yaml is uploaded in clear.",
    )(command)


def databricks_profile_option(command):
    """The databricks-sdk profile to sign in with, for the commands that call a workspace or an app."""
    return click.option(
        "--profile",
        show_envvar=True,
        envvar="DATABRICKS_CONFIG_PROFILE",
        metavar="NAME",
        help="Profile in ~/.databrickscfg. Default: databricks-sdk's unified authentication (DATABRICKS_HOST with a token or an OAuth client ID and secret, else the DEFAULT profile).",
    )(command)


def ui_wheel_option(command):
    return click.option(
        "--ui-wheel",
        show_envvar=True,
        envvar="MLFLOW_APP_UI_WHEEL",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="When the locked MLflow comes from git (no UI build): take the UI from this mlflow wheel instead of the installed package or PyPI.",
    )(command)


@contextlib.contextmanager
def deploy_errors():
    from deploy import DeployError

    try:
        yield
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("render")
@app_source_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default="-", show_default="stdout", help="Where to write app.yaml.")
def render_command(extra_env, project_dir, output) -> None:
    """Print the app.yaml Databricks Apps runs: our command and the app's settings.

    \b
    The file `stage` and `deploy` upload: the workspace's tracking store and Unity Catalog registry,
    JSON logs, artifacts on the app's volume resource, and the uploaded UI build when the locked
    MLflow comes from git.
    """
    with deploy_errors():
        from deploy.prepare import app_yaml_for
        from deploy.render import parse_env_options

        text = app_yaml_for(project_dir, parse_env_options(extra_env))
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@main.command("stage")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@app_source_options
@ui_wheel_option
def stage_command(directory, extra_env, project_dir, ui_wheel) -> None:
    """Build and check the folder Databricks Apps runs, without uploading it.

    \b
    DIRECTORY (default: build/databricks-app in --project-dir, where databricks.yml looks) gets our
    packages, app.yaml, requirements.txt pinned from uv.lock, and MLflow's UI when the locked MLflow
    has none. An earlier staging there is replaced.
    """
    with deploy_errors():
        from deploy.prepare import prepare_upload
        from deploy.render import parse_env_options

        prepare_upload(project_dir, directory or project_dir / STAGE_DIR, extra_env=parse_env_options(extra_env), ui_wheel=ui_wheel, echo=click.echo)


@main.command("deploy")
@click.option(
    "--app-name",
    required=True,
    show_envvar=True,
    envvar="MLFLOW_APP_NAME",
    metavar="NAME",
    help="The app in the workspace (lowercase letters, digits, hyphens); created when it does not exist.",
)
@click.option(
    "--volume",
    show_envvar=True,
    envvar="MLFLOW_APP_VOLUME",
    metavar="CATALOG.SCHEMA.VOLUME",
    help="Unity Catalog volume for artifacts, given to a new app as its resource (read and write). Needed to create the app; an existing app keeps its own.",
)
@click.option(
    "--source-path",
    show_envvar=True,
    envvar="MLFLOW_APP_SOURCE_PATH",
    metavar="PATH",
    show_default="/Workspace/Users/<you>/mlflow-app/<app-name>",
    help="Workspace folder the app's files are uploaded to.",
)
@databricks_profile_option
@click.option("--dry-run", is_flag=True, default=False, help="Do everything up to the upload (requirements, UI, staging, checks) and say what would follow; send nothing to the workspace.")
@click.option("--stage-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help="Build the upload in DIR and keep it. Default: a temporary folder.")
@click.option(
    "--timeout", show_envvar=True, envvar="MLFLOW_APP_DEPLOY_TIMEOUT", type=float, default=1200.0, show_default=True, help="Seconds to wait for the app's compute and for the deployment."
)
@click.option(
    "--compute-size",
    show_envvar=True,
    envvar="MLFLOW_APP_COMPUTE_SIZE",
    type=click.Choice(("MEDIUM", "LARGE"), case_sensitive=False),
    show_default="the platform's, MEDIUM",
    help="Compute of a new app: MEDIUM (2 vCPU, 6 GB) or LARGE (4 vCPU, 12 GB). An existing app keeps its own.",
)
@app_source_options
@ui_wheel_option
def deploy_command(app_name, volume, source_path, profile, dry_run, stage_dir, timeout, compute_size, extra_env, project_dir, ui_wheel) -> None:
    """Deploy to Databricks Apps in one command.

    \b
    Writes requirements.txt from uv.lock, adds MLflow's UI when the locked MLflow has none, checks
    the upload (no file over 10 MB, nothing secret), uploads it, creates the app with its volume
    when it does not exist, deploys a snapshot, waits, and prints the app's URL and log URL.
    """
    with deploy_errors(), contextlib.ExitStack() as stack:
        from deploy.prepare import prepare_upload
        from deploy.render import parse_env_options
        from deploy.target import check_app_name, describe_plan, volume_full_name

        check_app_name(app_name)
        volume = volume_full_name(volume) if volume else None
        compute_size = compute_size.upper() if compute_size else None
        if stage_dir is None:
            stage_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-app-deploy-"))) / "app"
        staged = prepare_upload(project_dir, stage_dir, extra_env=parse_env_options(extra_env), ui_wheel=ui_wheel, echo=click.echo)
        if dry_run:
            for line in describe_plan(staged, app_name=app_name, volume=volume, source_path=source_path, profile=profile, timeout=timeout, compute_size=compute_size):
                click.echo(line)
            return
        from deploy.workspace import AppDeployer, workspace_client  # databricks-sdk takes seconds to import

        deployer = AppDeployer(workspace_client(profile), echo=click.echo, timeout=timeout)  # waits with databricks-sdk's waiters
        deployer.run(staged, app_name=app_name, volume=volume, source_path=source_path, compute_size=compute_size)


@main.command("call")
@click.argument("url")
@click.argument("method", required=False)
@click.argument("json_body", metavar="[JSON]", required=False)
@click.option(
    "--app-url",
    show_envvar=True,
    envvar="MLFLOW_TRACKING_URI",
    metavar="URL",
    help="The app's URL, for a URL given as a path (/api/2.0/mlflow/…). Default: MLFLOW_TRACKING_URI, as the mlflow client reads it.",
)
@databricks_profile_option
@click.option(
    "--timeout", show_envvar=True, envvar="MLFLOW_APP_CALL_TIMEOUT", type=float, default=60.0, show_default=True, help="Seconds for the sign-in, and for the app to connect and answer."
)
@click.option(
    "--header", "-H", "header_lines", multiple=True, metavar="'NAME: VALUE'", help="Another request header; repeatable. An Authorization header of your own replaces the Databricks token."
)
def call_command(url, method, json_body, app_url, profile, timeout, header_lines) -> None:
    """Send one request to a deployed app with your Databricks OAuth token, as you would with curl.

    \b
    URL is a full URL or a path below --app-url. METHOD defaults to GET, or POST with JSON. JSON is
    the body as text, or @file (@- for stdin); with GET its fields become query parameters. The
    token (a Databricks OAuth token: the platform refuses others) comes from databricks-sdk
    (DATABRICKS_HOST and credentials, or --profile) and goes only to an app of the credentials' own
    workspace (https://<app>-<workspace id>.<region>.databricksapps.com) and to the prefixes in
    MLFLOW_APP_DATABRICKS_TOKEN_URLS.
    Prints the body on stdout (indented when it is JSON), the status on stderr; exits 1 on HTTP 400
    and above, or when no answer came.

    \b
    mlflow-app call https://mlflow-123.aws.databricksapps.com/api/2.0/mlflow/experiments/search POST '{"max_results": 5}'
    mlflow-app call /api/2.0/mlflow/experiments/get-by-name GET '{"experiment_name": "Default"}'
    """
    from launcher.client.app_token import AppTokenError, DatabricksToken, TokenTargets
    from launcher.client.call import CallError, authorize, build_call, send

    try:
        request = build_call(url, method, json_body, app_url, header_lines)
        request, note = authorize(request, DatabricksToken(profile, timeout=timeout), TokenTargets.from_environment())
        if note:
            click.echo(f"mlflow-app call: {note}", err=True)
        answer = send(request, timeout)
    except (CallError, AppTokenError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(answer.status_line(), err=True)
    click.echo(answer.printable_body(), nl=False)  # bytes: written as they are
    if not answer.ok:
        raise SystemExit(1)
