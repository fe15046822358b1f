"""The `mlflow-app` command line."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from launcher.databricks.defaults import default_backend_store_uri, default_log_format, default_registry_store_uri
from launcher.settings import MLFLOW_UNIX_SOCKET_DEFAULT, Settings, SettingsError, default_host, split_list, validate
from proxy.edge.policy import DEFAULT_ALLOWED_HOSTS
from proxy.edge.forwarded import parse_proxy_addresses
from proxy.forwarding.compression import DEFAULT_MIN_BYTES
from proxy.forwarding.forwarder import DEFAULT_MAX_PER_CLIENT


def default_port() -> int:
    return int(os.environ.get("DATABRICKS_APP_PORT") or 8000)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-app")
def main() -> None:
    """mlflow-app: the open-source MLflow tracking server behind a production front process."""


@main.command()
@click.option("--host", show_envvar=True, envvar="MLFLOW_HOST", default=default_host, show_default="127.0.0.1; 0.0.0.0 on Databricks Apps",
              help="Address the front listens on. MLflow itself always listens on 127.0.0.1 only.")
@click.option("--port", show_envvar=True, envvar=["MLFLOW_PORT", "DATABRICKS_APP_PORT"], type=int, default=default_port, show_default="$DATABRICKS_APP_PORT, else 8000",
              help="Port the front listens on: the one port users, clients and monitoring reach.")
@click.option("--backend-store-uri", show_envvar=True, envvar="MLFLOW_BACKEND_STORE_URI", metavar="URI", default=default_backend_store_uri,
              show_default="databricks on Databricks Apps, else an embedded SQLite database in --data-dir",
              help="Where MLflow keeps experiments and runs: sqlite:///…, postgresql://…, mysql://…, file:/…, or "
                   "databricks (a workspace's tracking store, with DATABRICKS_HOST and credentials).")
@click.option("--registry-store-uri", show_envvar=True, envvar="MLFLOW_REGISTRY_STORE_URI", metavar="URI", default=default_registry_store_uri,
              show_default="databricks-uc on Databricks Apps, else the backend store",
              help="Where MLflow keeps registered models (e.g. databricks-uc, a workspace's Unity Catalog).")
@click.option("--default-artifact-root", show_envvar=True, envvar="MLFLOW_DEFAULT_ARTIFACT_ROOT", metavar="URI",
              help="Artifact location for new experiments. Default: MLflow's choice (mlflow-artifacts:/ when "
                   "artifacts are served).")
@click.option("--serve-artifacts/--no-serve-artifacts", show_envvar=True, envvar="MLFLOW_SERVE_ARTIFACTS", default=True, show_default=True,
              help="Let clients upload and download artifacts through the server over HTTP, so they need no access "
                   "to the artifact store themselves.")
@click.option("--artifacts-destination", show_envvar=True, envvar="MLFLOW_ARTIFACTS_DESTINATION", metavar="URI",
              help="Where served artifacts are stored (a path, s3://, gs://, wasbs://, …). Default: artifacts/ in --data-dir.")
@click.option("--workers", show_envvar=True, envvar="MLFLOW_WORKERS", type=int, default=1, show_default=True,
              help="MLflow's uvicorn workers. Each costs ~250 MB and a few CPU-seconds to start.")
@click.option("--job-execution/--no-job-execution", show_envvar=True, envvar="MLFLOW_SERVER_ENABLE_JOB_EXECUTION", default=False, show_default=True,
              help="MLflow's background job runner (GenAI jobs such as scheduled scorers). Off by default: it starts "
                   "several more processes and ~2 GiB of memory.")
@click.option("--data-dir", show_envvar=True, envvar="MLFLOW_APP_DATA_DIR", type=click.Path(path_type=Path), default=Path("mlflow-data"), show_default=True,
              help="Directory for the embedded default: mlflow.db (SQLite) and artifacts/.")
@click.option("--ui-dir", show_envvar=True, envvar="MLFLOW_APP_UI_DIR", type=click.Path(path_type=Path),
              help="MLflow UI build the front serves. Default: the build inside the installed mlflow package.")
@click.option("--mlflow-port", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_PORT", type=int, default=0, show_default="a free loopback port",
              help="Loopback port of the MLflow child.")
@click.option("--mlflow-unix-socket/--no-mlflow-unix-socket", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_UNIX_SOCKET", default=MLFLOW_UNIX_SOCKET_DEFAULT, show_default=True,
              help="Run the MLflow child on a Unix socket in a directory only this user can open, instead of a loopback "
                   "port that every local account can reach around --auth-token. TCP is kept with --mlflow-port or "
                   "--job-execution (MLflow's job runner calls the server over HTTP).")
@click.option("--log-format", show_envvar=True, envvar="MLFLOW_APP_LOG_FORMAT", type=click.Choice(["text", "json"]), default=default_log_format, show_default="text; json on Databricks Apps",
              help="Log lines on stdout: text for people, json for log collectors.")
@click.option("--log-level", show_envvar=True, envvar="MLFLOW_APP_LOG_LEVEL", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True,
              help="Lowest level logged: the front's request log and messages, and MLflow's output unless --mlflow-log-level says otherwise.")
@click.option("--mlflow-log-level", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_LOG_LEVEL", type=click.Choice(["debug", "info", "warning", "error"]), show_default="--log-level",
              help="Lowest level of MLflow's own output (its messages and its access lines) folded into the log; warning drops "
                   "MLflow's per-request lines, which the front's request log already covers.")
@click.option("--upstream-timeout", show_envvar=True, envvar="MLFLOW_APP_UPSTREAM_TIMEOUT", type=float, default=60.0, show_default=True,
              help="Seconds to wait for MLflow to start answering (and between bytes of a transfer) before the client "
                   "gets 504.")
@click.option("--compress-responses/--no-compress-responses", show_envvar=True, envvar="MLFLOW_APP_COMPRESS_RESPONSES", default=True, show_default=True,
              help="Compress MLflow's large JSON answers (runs/search, metric history, ...) with brotli or gzip for clients "
                   "that accept it; never artifacts, event streams or answers already encoded (docs/benchmarks.md).")
@click.option("--compress-min-bytes", show_envvar=True, envvar="MLFLOW_APP_COMPRESS_MIN_BYTES", type=click.IntRange(min=0), default=DEFAULT_MIN_BYTES, show_default=True,
              help="Smallest JSON answer, in bytes, that is compressed; smaller ones go out as MLflow sent them.")
@click.option("--mlflow-start-timeout", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_START_TIMEOUT", type=float, default=300.0, show_default=True,
              help="Seconds MLflow may take to become ready (migrations included) before it is restarted.")
@click.option("--drain-seconds", show_envvar=True, envvar="MLFLOW_APP_DRAIN_SECONDS", type=float, default=8.0, show_default=True,
              help="On SIGTERM, how long in-flight requests may finish before MLflow is stopped.")
@click.option("--mlflow-probe-interval", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_PROBE_INTERVAL", type=float, default=10.0, show_default=True,
              help="Seconds between health checks of a running MLflow; each may take up to min(5, this) seconds.")
@click.option("--mlflow-probe-failures", show_envvar=True, envvar="MLFLOW_APP_MLFLOW_PROBE_FAILURES", type=int, default=3, show_default=True,
              help="Failed health checks in a row after which MLflow counts as hung and is replaced.")
@click.option("--client-idle-timeout", show_envvar=True, envvar="MLFLOW_APP_CLIENT_IDLE_TIMEOUT", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds a client may leave a request body unsent, or an answer unread, before it is cut off (408 if "
                   "nothing was answered yet) and its connection to MLflow freed.")
@click.option("--client-min-rate", show_envvar=True, envvar="MLFLOW_APP_CLIENT_MIN_RATE", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Bytes per second a request body must average once it has taken --client-idle-timeout; a slower one is "
                   "cut off with 408. 0: no minimum.")
@click.option("--max-upstream-per-client", show_envvar=True, envvar="MLFLOW_APP_MAX_UPSTREAM_PER_CLIENT", type=click.IntRange(min=1), default=DEFAULT_MAX_PER_CLIENT, show_default=True,
              help="Requests one client address may have in progress at MLflow at once (of the front's 512 connections); "
                   "more get 429 with Retry-After.")
@click.option("--forwarded-allow-ips", show_envvar=True, envvar=["MLFLOW_APP_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"], metavar="LIST",
              show_default="127.0.0.1,::1; * on Databricks Apps",
              help="Comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For, -Host, -Proto, "
                   "-Email and -User headers are believed; from any other peer they are dropped. * trusts every peer.")
@click.option("--allowed-hosts", show_envvar=True, envvar="MLFLOW_SERVER_ALLOWED_HOSTS", metavar="LIST",
              show_default="loopback, private addresses, *.databricksapps.com",
              help="Comma-separated Host names (fnmatch patterns) the server answers to; others get 403 (DNS rebinding "
                   "protection). Add the name users reach a self-hosted server by.")
@click.option("--cors-allowed-origins", show_envvar=True, envvar="MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", metavar="LIST",
              help="Comma-separated origins (besides the server's own) whose browser pages may write through the API.")
@click.option("--auth-token", show_envvar=True, envvar="MLFLOW_APP_AUTH_TOKEN", metavar="TOKEN",
              help="Require this token on every request but /health: 'Authorization: Bearer <token>' (MLFLOW_TRACKING_TOKEN "
                   "for the mlflow client), or HTTP Basic with any user name and the token as password (a browser's login "
                   "prompt). Prefer the environment variable: a flag shows in the process list.")
@click.option("--no-auth", show_envvar=True, envvar="MLFLOW_APP_NO_AUTH", is_flag=True, default=False,
              help="Serve without authentication on a --host other machines can reach. Without it, such a --host needs "
                   "--auth-token (not on Databricks Apps, which authenticates users itself).")
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
        from launcher.server import run_server as run  # imported late: --help stays fast

        run(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


LIST_OPTIONS = ("allowed_hosts", "cors_allowed_origins", "forwarded_allow_ips")


def settings_from_options(options: dict) -> Settings:
    forwarded_allow_ips = None
    if options["forwarded_allow_ips"] is not None:
        try:
            forwarded_allow_ips = parse_proxy_addresses(options["forwarded_allow_ips"])
        except ValueError as exc:
            raise SettingsError(f"--forwarded-allow-ips: {exc}.") from None
    return Settings(
        **{k: v for k, v in options.items() if k not in LIST_OPTIONS},
        allowed_hosts=split_list(options["allowed_hosts"]) or DEFAULT_ALLOWED_HOSTS,
        cors_allowed_origins=split_list(options["cors_allowed_origins"]),
        forwarded_allow_ips=forwarded_allow_ips,
    )


# Databricks Apps: render, stage, deploy. deploy/ is imported inside each command, so --help stays fast.
PROJECT_DIR = Path(__file__).resolve().parent.parent  # the checkout whose uv.lock and packages are deployed
STAGE_DIR = Path("build") / "databricks-app"  # inside --project-dir; databricks.yml's source_code_path


def app_source_options(command):
    """--env and --project-dir: what the app is made of, for render, stage and deploy alike."""
    command = click.option("--project-dir", show_envvar=True, envvar="MLFLOW_APP_PROJECT_DIR", type=click.Path(file_okay=False, exists=True, path_type=Path), default=PROJECT_DIR, show_default="this checkout",
                           help="The mlflow-app checkout whose uv.lock and packages are deployed.")(command)
    return click.option("--env", "extra_env", multiple=True, metavar="NAME=VALUE",
                        help="Another `mlflow-app serve` setting for the app, as its environment variable (e.g. MLFLOW_WORKERS=2); "
                             "repeatable; replaces ours of the same name. Never a credential: app.yaml is uploaded in clear.")(command)


def databricks_profile_option(command):
    """The databricks-sdk profile to sign in with, for the commands that call a workspace or an app."""
    return click.option("--profile", show_envvar=True, envvar="DATABRICKS_CONFIG_PROFILE", metavar="NAME",
                        help="Profile in ~/.databrickscfg. Default: databricks-sdk's unified authentication (DATABRICKS_HOST "
                             "with a token or an OAuth client ID and secret, else the DEFAULT profile).")(command)


def ui_wheel_option(command):
    return click.option("--ui-wheel", show_envvar=True, envvar="MLFLOW_APP_UI_WHEEL", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        help="When the locked MLflow comes from git (no UI build): take the UI from this mlflow wheel instead of "
                             "the installed package or PyPI.")(command)


@contextlib.contextmanager
def deploy_errors():
    from deploy import DeployError

    try:
        yield
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("render")
@app_source_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default="-", show_default="stdout",
              help="Where to write app.yaml.")
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
@click.option("--app-name", required=True, show_envvar=True, envvar="MLFLOW_APP_NAME", metavar="NAME",
              help="The app in the workspace (lowercase letters, digits, hyphens); created when it does not exist.")
@click.option("--volume", show_envvar=True, envvar="MLFLOW_APP_VOLUME", metavar="CATALOG.SCHEMA.VOLUME",
              help="Unity Catalog volume for artifacts, given to a new app as its resource (read and write). Needed to create "
                   "the app; an existing app keeps its own.")
@click.option("--source-path", show_envvar=True, envvar="MLFLOW_APP_SOURCE_PATH", metavar="PATH", show_default="/Workspace/Users/<you>/mlflow-app/<app-name>",
              help="Workspace folder the app's files are uploaded to.")
@databricks_profile_option
@click.option("--dry-run", is_flag=True, default=False,
              help="Do everything up to the upload (requirements, UI, staging, checks) and say what would follow; send nothing "
                   "to the workspace.")
@click.option("--stage-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Build the upload in DIR and keep it. Default: a temporary folder.")
@click.option("--timeout", show_envvar=True, envvar="MLFLOW_APP_DEPLOY_TIMEOUT", type=float, default=1200.0, show_default=True,
              help="Seconds to wait for the app's compute and for the deployment.")
@click.option("--poll-interval", envvar="MLFLOW_APP_DEPLOY_POLL_INTERVAL", type=float, default=5.0, hidden=True)
@app_source_options
@ui_wheel_option
def deploy_command(app_name, volume, source_path, profile, dry_run, stage_dir, timeout, poll_interval, extra_env, project_dir, ui_wheel) -> None:
    """Deploy to Databricks Apps in one command.

    \b
    Writes requirements.txt from uv.lock, adds MLflow's UI when the locked MLflow has none, checks
    the upload (no file over 10 MB, nothing secret), uploads it, creates the app with its volume
    when it does not exist, deploys a snapshot, waits, and prints the app's URL and log URL.
    """
    with deploy_errors(), contextlib.ExitStack() as stack:
        from deploy.plan import check_app_name, describe_plan, volume_full_name
        from deploy.prepare import prepare_upload
        from deploy.render import parse_env_options

        check_app_name(app_name)
        volume = volume_full_name(volume) if volume else None
        if stage_dir is None:
            stage_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-app-deploy-"))) / "app"
        staged = prepare_upload(project_dir, stage_dir, extra_env=parse_env_options(extra_env), ui_wheel=ui_wheel, echo=click.echo)
        if dry_run:
            for line in describe_plan(staged, app_name=app_name, volume=volume, source_path=source_path, profile=profile, timeout=timeout):
                click.echo(line)
            return
        from deploy.workspace import AppDeployer, workspace_client  # databricks-sdk takes seconds to import

        deployer = AppDeployer(workspace_client(profile), echo=click.echo, poll_interval=poll_interval, timeout=timeout)
        deployer.run(staged, app_name=app_name, volume=volume, source_path=source_path)


@main.command("call")
@click.argument("url")
@click.argument("method", required=False)
@click.argument("json_body", metavar="[JSON]", required=False)
@click.option("--app-url", show_envvar=True, envvar="MLFLOW_TRACKING_URI", metavar="URL",
              help="The app's URL, for a URL given as a path (/api/2.0/mlflow/…). Default: MLFLOW_TRACKING_URI, as the mlflow "
                   "client reads it.")
@databricks_profile_option
@click.option("--timeout", show_envvar=True, envvar="MLFLOW_APP_CALL_TIMEOUT", type=float, default=60.0, show_default=True,
              help="Seconds for the sign-in, and for the app to connect and answer.")
@click.option("--header", "-H", "header_lines", multiple=True, metavar="'NAME: VALUE'",
              help="Another request header; repeatable. An Authorization header of your own replaces the Databricks token.")
def call_command(url, method, json_body, app_url, profile, timeout, header_lines) -> None:
    """Send one request to a deployed app with your Databricks OAuth token, as you would with curl.

    \b
    URL is a full URL or a path below --app-url. METHOD defaults to GET, or POST with JSON. JSON is
    the body as text, or @file (@- for stdin); with GET its fields become query parameters. The
    token comes from databricks-sdk (DATABRICKS_HOST and credentials, or --profile) and goes only to
    https://*.databricksapps.com and the prefixes in MLFLOW_APP_DATABRICKS_TOKEN_URLS.
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
