"""The workspace half of a deployment, through databricks-sdk and its unified authentication (a profile,
DATABRICKS_HOST with a token or OAuth client, or `databricks auth login`): upload the staged folder,
make sure the app exists with its volume, deploy a snapshot, wait, and say where the app is."""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
    ComputeState,
)
from databricks.sdk.service.workspace import ImportFormat

from deploy import DeployError
from deploy.render import VOLUME_RESOURCE
from deploy.staging import StagedApp
from deploy.target import default_source_path, log_url

T = TypeVar("T")

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


class AppDeployer:
    """Upload, app, snapshot deployment; each step reported through `echo`."""

    def __init__(
        self,
        client: WorkspaceClient,
        *,
        echo: Callable[[str], None] = print,
        poll_interval: float = 5.0,
        timeout: float = 1200.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.echo = echo
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock

    def run(self, staged: StagedApp, *, app_name: str, volume: str | None, source_path: str | None) -> App:
        """Deploy `staged` as `app_name` and return the app once its new deployment runs."""
        if source_path is None:
            with step("Looking up the current user"):
                source_path = default_source_path(self.client.current_user.me().user_name, app_name)
        app = self.find_or_create_app(app_name, volume)  # a new app's compute starts while we upload
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

    def find_or_create_app(self, app_name: str, volume: str | None) -> App:
        with step(f"Looking up app {app_name}"):
            try:
                app = self.client.apps.get(app_name)
            except NotFound:
                app = None
        if app is None:
            if volume is None:
                raise DeployError(f"App {app_name} does not exist yet; pass --volume catalog.schema.volume to create it with a volume for artifacts.")
            self.echo(f"Creating app {app_name} with volume {volume} as its resource '{VOLUME_RESOURCE}' (read and write)")
            with step(f"Creating app {app_name}"):
                return self.client.apps.create(App(name=app_name, description=DESCRIPTION, resources=[volume_resource(volume)])).response
        self.echo(f"App {app_name} exists ({app.url})")
        self.check_volume(app, volume)
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

    def wait_for_compute(self, app: App) -> App:
        """The app once its compute is ACTIVE (a new or started app takes a few minutes)."""
        last = None

        def active(app: App, elapsed: float) -> bool:
            nonlocal last
            state = app.compute_status.state if app.compute_status else None
            message = app.compute_status.message if app.compute_status else None
            if state == ComputeState.ACTIVE:
                if last is not None:
                    self.echo(f"  compute ACTIVE after {elapsed:.0f} s")
                return True
            if state in (ComputeState.ERROR, ComputeState.DELETING):
                raise DeployError(f"The compute of app {app.name} is {state.value}: {message or 'no message'}. See the app's page in the workspace.")
            if (state, message) != last:
                self.echo(f"  compute {state.value if state else 'PENDING'}: {message or ''}".rstrip(": "))
                last = (state, message)
            return False

        def read(app: App) -> App:
            with step(f"Reading app {app.name}"):
                return self.client.apps.get(app.name)

        overdue = f"The compute of app {app.name} did not become ACTIVE within {self.timeout:.0f} s; look at the app's page in the workspace."
        return self.poll(app, read, active, overdue)

    def deploy_snapshot(self, app: App, source_path: str) -> AppDeployment:
        """Deploy a snapshot of `source_path` and wait until it runs; DeployError with the platform's reason if not."""
        self.echo(f"Deploying {source_path} to app {app.name} (snapshot)")
        with step(f"Deploying app {app.name}"):
            deployment = self.client.apps.deploy(app.name, AppDeployment(source_code_path=source_path, mode=AppDeploymentMode.SNAPSHOT)).response
        last = None

        def running(deployment: AppDeployment, elapsed: float) -> bool:
            nonlocal last
            state = deployment.status.state if deployment.status else None
            message = deployment.status.message if deployment.status else None
            label = state.value if state else "PENDING"  # states this SDK does not know read as None
            if (label, message) != last:
                self.echo(f"  {elapsed:5.0f} s  {label}: {message or ''}".rstrip(": "))
                last = (label, message)
            if state == AppDeploymentState.SUCCEEDED:
                return True
            if state in (AppDeploymentState.FAILED, AppDeploymentState.CANCELLED):
                raise DeployError(f"Deployment {deployment.deployment_id} of app {app.name} {label}: {message or 'no message'}. The app's log: {log_url(app.url or '')}")
            return False

        def read(deployment: AppDeployment) -> AppDeployment:
            with step(f"Reading deployment {deployment.deployment_id}"):
                return self.client.apps.get_deployment(app.name, deployment.deployment_id)

        def overdue(deployment: AppDeployment) -> str:
            label = deployment.status.state.value if deployment.status and deployment.status.state else "PENDING"
            return f"Deployment {deployment.deployment_id} of app {app.name} is still {label} after {self.timeout:.0f} s; follow it at {log_url(app.url or '')}"

        return self.poll(deployment, read, running, overdue)

    def poll(self, first: T, read: Callable[[T], T], settled: Callable[[T, float], bool], overdue: str | Callable[[T], str]) -> T:
        """`first`, then `read(last)` every `poll_interval`, until `settled(value, seconds so far)` is true (it
        raises for a state that will never settle); DeployError saying `overdue` once `timeout` has passed."""
        started = self.clock()
        value = first
        while not settled(value, self.clock() - started):
            if self.clock() - started > self.timeout:
                raise DeployError(overdue(value) if callable(overdue) else overdue)
            self.sleep(self.poll_interval)
            value = read(value)
        return value
