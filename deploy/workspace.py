"""The workspace half of a deployment, through databricks-sdk and its unified authentication (a profile,
DATABRICKS_HOST with a token or OAuth client, or `databricks auth login`): upload the staged folder,
make sure the app exists with its volume, deploy a snapshot, wait, and say where the app is."""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, NotFound
from databricks.sdk.service.apps import (
    App,
    AppDeployment,
    AppDeploymentMode,
    AppDeploymentState,
    AppResource,
    AppResourceUcSecurable,
    AppResourceUcSecurableUcSecurablePermission,
    AppResourceUcSecurableUcSecurableType,
    ComputeSize,
    ComputeState,
)
from databricks.sdk.service.workspace import ImportFormat

from deploy import DeployError
from deploy.render import VOLUME_RESOURCE
from deploy.staging import StagedApp
from deploy.target import default_source_path, log_url

DESCRIPTION = "MLflow tracking server behind mlflow-app's front process"
UPLOAD_THREADS = 8


def volume_resource(volume: str) -> AppResource:
    """The app resource that grants the app's service principal read and write on the volume."""
    return AppResource(
        name=VOLUME_RESOURCE,
        description="MLflow artifacts",
        uc_securable=AppResourceUcSecurable(
            securable_full_name=volume,
            securable_type=AppResourceUcSecurableUcSecurableType.VOLUME,
            permission=AppResourceUcSecurableUcSecurablePermission.WRITE_VOLUME,
        ),
    )


def workspace_client(profile: str | None) -> WorkspaceClient:
    """A client from databricks-sdk's unified authentication; one line on stderr-worthy failure."""
    try:
        return WorkspaceClient(profile=profile)
    except ValueError as exc:  # databricks-sdk reports missing or conflicting credentials so
        reason = str(exc).splitlines()[0]
        raise DeployError(f"Databricks authentication: {reason}. Set DATABRICKS_HOST and DATABRICKS_TOKEN (or an OAuth client), pass --profile, or run `databricks auth login`.") from None


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Turn the workspace's refusals into one line that says which step failed."""
    try:
        yield
    except DatabricksError as exc:
        code = f" ({exc.error_code})" if getattr(exc, "error_code", None) else ""
        raise DeployError(f"{what} failed{code}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except ValueError as exc:  # databricks-sdk signs in at the first call: a refused OAuth client surfaces here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeployError(
            f"{what} failed: Databricks authentication: {reason}. Check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (or the token, or the profile) for this host."
        ) from None


class AppDeployer:
    """Upload, app, snapshot deployment; each step reported through `echo`."""

    def __init__(
        self,
        client: WorkspaceClient,
        *,
        echo: Callable[[str], None] = print,
        timeout: float = 1200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.echo = echo
        self.timeout = timeout  # for the compute, and again for the deployment
        self.clock = clock

    def run(self, staged: StagedApp, *, app_name: str, volume: str | None, source_path: str | None, compute_size: str | None = None) -> App:
        """Deploy `staged` as `app_name` and return the app once its new deployment runs."""
        if source_path is None:
            with step("Looking up the current user"):
                source_path = default_source_path(self.client.current_user.me().user_name, app_name)
        app = self.find_or_create_app(app_name, volume, compute_size)  # a new app's compute starts while we upload
        self.upload(staged, source_path)
        app = self.wait_for_compute(app)
        self.deploy_snapshot(app, source_path)
        self.echo(f"App URL: {app.url}")
        self.echo(f"Logs:    {log_url(app.url or '')}")
        return app

    def upload(self, staged: StagedApp, remote_root: str) -> None:
        """Every staged file to `remote_root`, as workspace files (never notebooks), replacing older ones."""
        total = len(staged.files)
        self.echo(f"Uploading {total} files ({staged.total_size / 1e6:.2f} MB) to {remote_root}")
        folders = sorted({posixpath.dirname(f"{remote_root}/{f.path}") for f in staged.files})
        with step(f"Creating {remote_root}"):
            for folder in folders:
                self.client.workspace.mkdirs(folder)

        def put(path: str) -> None:
            with step(f"Uploading {path}"), (staged.root / path).open("rb") as content:
                self.client.workspace.upload(f"{remote_root}/{path}", content, format=ImportFormat.AUTO, overwrite=True)

        done = 0
        every = max(1, -(-total // 4))  # a line at each quarter
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for _ in pool.map(put, [f.path for f in staged.files]):
                done += 1
                if done % every == 0 or done == total:
                    self.echo(f"  uploaded {done}/{total}")

    def find_or_create_app(self, app_name: str, volume: str | None, compute_size: str | None = None) -> App:
        with step(f"Looking up app {app_name}"):
            try:
                app = self.client.apps.get(app_name)
            except NotFound:
                app = None
        if app is None:
            if volume is None:
                raise DeployError(f"App {app_name} does not exist yet; pass --volume catalog.schema.volume to create it with a volume for artifacts.")
            size = ComputeSize(compute_size) if compute_size else None
            on = f" on {compute_size} compute" if compute_size else ""
            self.echo(f"Creating app {app_name}{on} with volume {volume} as its resource '{VOLUME_RESOURCE}' (read and write)")
            with step(f"Creating app {app_name}"):
                return self.client.apps.create(App(name=app_name, description=DESCRIPTION, resources=[volume_resource(volume)], compute_size=size)).response
        self.echo(f"App {app_name} exists ({app.url})")
        self.check_volume(app, volume)
        self.check_compute_size(app, compute_size)
        if app.compute_status and app.compute_status.state == ComputeState.STOPPED:
            self.echo(f"Starting the stopped app {app_name}")
            with step(f"Starting app {app_name}"):
                return self.client.apps.start(app_name).response
        return app

    def check_volume(self, app: App, volume: str | None) -> None:
        resource = next((r for r in app.resources or [] if r.name == VOLUME_RESOURCE), None)
        current = resource.uc_securable.securable_full_name if resource and resource.uc_securable else None
        if current is None:
            raise DeployError(
                f"App {app.name} has no volume resource named '{VOLUME_RESOURCE}', which app.yaml reads; add one (Can read and write) in the app's settings, or deploy under a new --app-name."
            )
        if volume is not None and volume != current:
            raise DeployError(f"App {app.name} keeps its artifacts on {current}, not {volume}; drop --volume to keep {current}, or change the resource in the app's settings.")

    def check_compute_size(self, app: App, compute_size: str | None) -> None:
        current = app.compute_size.value if app.compute_size else None
        if compute_size is not None and current is not None and compute_size != current:
            raise DeployError(f"App {app.name} runs on {current} compute, not {compute_size}; change its size in the app's settings, or drop --compute-size.")

    def wait_for_compute(self, app: App) -> App:
        """The app once its compute is ACTIVE (a new or started app takes a few minutes), through
        databricks-sdk's waiter; every change of state on the way is one line."""
        if app.compute_status and app.compute_status.state == ComputeState.ACTIVE:
            return app
        started = self.clock()
        last = None

        def progress(app: App) -> None:  # the waiter calls it with each state short of ACTIVE
            nonlocal last
            state = app.compute_status.state if app.compute_status else None
            message = app.compute_status.message if app.compute_status else None
            if state in (ComputeState.ERROR, ComputeState.STOPPED, ComputeState.DELETING):  # the waiter gives up on the first two only
                raise DeployError(f"The compute of app {app.name} is {state.value}: {message or 'no message'}. See the app's page in the workspace.")
            if (state, message) != last:
                self.echo(f"  compute {state.value if state else 'in an unknown state'}: {message or ''}".rstrip(": "))
                last = (state, message)

        progress(app)
        with step(f"Reading app {app.name}"), overdue(f"The compute of app {app.name} did not become ACTIVE within {self.timeout:.0f} s; look at the app's page in the workspace."):
            app = self.client.apps.wait_get_app_active(app.name, timeout=timedelta(seconds=self.timeout), callback=progress)
        self.echo(f"  compute ACTIVE after {self.clock() - started:.0f} s")
        return app

    def deploy_snapshot(self, app: App, source_path: str) -> AppDeployment:
        """Deploy a snapshot of `source_path` and wait, through databricks-sdk's waiter, until it runs;
        DeployError with the platform's reason if it does not."""
        self.echo(f"Deploying {source_path} to app {app.name} (snapshot)")
        with step(f"Deploying app {app.name}"):
            waiting = self.client.apps.deploy(app.name, AppDeployment(source_code_path=source_path, mode=AppDeploymentMode.SNAPSHOT))
        started = self.clock()
        last = None

        def progress(deployment: AppDeployment) -> None:  # each state short of SUCCEEDED, and SUCCEEDED itself last
            nonlocal last
            label = state_of(deployment)
            message = deployment.status.message if deployment.status else None
            if (label, message) != last:
                self.echo(f"  {self.clock() - started:5.0f} s  {label}: {message or ''}".rstrip(": "))
                last = (label, message)
            if deployment.status and deployment.status.state in (AppDeploymentState.FAILED, AppDeploymentState.CANCELLED):  # the SDK's waiter waits on after CANCELLED
                raise DeployError(f"Deployment {deployment.deployment_id} of app {app.name} {label}: {message or 'no message'}. The app's log: {log_url(app.url or '')}")

        progress(waiting.response)
        deployment_id = waiting.response.deployment_id
        with (
            step(f"Reading deployment {deployment_id}"),
            overdue(lambda: f"Deployment {deployment_id} of app {app.name} is still {last[0] if last else 'unknown'} after {self.timeout:.0f} s; follow it at {log_url(app.url or '')}"),
        ):
            deployment = waiting.result(timeout=timedelta(seconds=self.timeout), callback=progress)
        progress(deployment)
        return deployment


def state_of(deployment: AppDeployment) -> str:
    """The deployment's state by name; a state this SDK does not know reads as None, said as such."""
    return deployment.status.state.value if deployment.status and deployment.status.state else "an unknown state"


@contextlib.contextmanager
def overdue(message: str | Callable[[], str]) -> Iterator[None]:
    """Turn a waiter's TimeoutError into one line saying what did not happen in time."""
    try:
        yield
    except TimeoutError:
        raise DeployError(message() if callable(message) else message) from None
