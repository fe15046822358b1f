"""The start-up check of the grants the app's service principal needs, as warnings: Unity Catalog
(the artifacts volume, CREATE MODEL) and the experiment folder.

A missing grant does not stop the app: it can still serve what it may (the UI, tracking), and an
operator may grant it later. So the check runs in the background once the front listens, bounded
in time, and each grant found missing becomes one log line and one entry in `/health`'s
`warnings` (proxy/startup_warnings.py), saying what will be refused:

    missing grant: WRITE VOLUME on main.default.mlflow (artifact uploads will be refused)

What is checked (docs/databricks.md, "Grants the app needs"):
- the artifacts volume (from `--artifacts-destination`, `dbfs:/Volumes/<c>/<s>/<v>/…`): USE CATALOG,
  USE SCHEMA, READ VOLUME and WRITE VOLUME;
- with a Unity Catalog registry (`databricks-uc`): USE CATALOG, USE SCHEMA and CREATE MODEL on the
  volume's schema. No setting names a schema for models, and clients may register anywhere; the
  volume's schema is where a team that keeps its artifacts there most likely keeps its models too,
  so it is the one place the check can speak for. Without a volume the registry is not checked.

Each securable is asked once, with databricks-sdk's `w.grants.get_effective(type, name,
principal=<who we are>)`, which lists privileges granted on it and inherited from its catalog
and schema. Ownership of a securable grants everything without being listed there (unverified
on a workspace): an owner may see a warning it can ignore. A securable the check cannot read
(missing, or permissions it may not see) is one warning saying so.

The experiment folder (`--experiment-folder`, with a workspace tracking store) is made at start
by experiment_folder.py; here the app checks that it may create experiments in it, which a folder
that exists does not say: it makes an empty folder `.mlflow-app-write-check` inside and deletes it
(no API gives a principal's effective folder permission, groups included). Refused, that is
`missing grant: CAN MANAGE on folder <folder> (…)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from launcher.client.deadline import DeadlinePassed, call_with_deadline
from launcher.client.sdk_errors import sdk_reason
from launcher.databricks.child_environment import child_artifacts_destination, child_experiment_folder
from launcher.databricks.experiment_folder import CREATE_PERMISSION
from launcher.redaction import Redactor
from launcher.settings import Settings, uri_scheme

log = logging.getLogger("mlflow_app.launcher")

CHECK_HTTP_TIMEOUT_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 60.0
# Made and deleted inside the experiment folder: creating an item there is what experiments need.
WRITE_PROBE = ".mlflow-app-write-check"


@dataclass(frozen=True)
class NeededGrant:
    privilege: str  # as Unity Catalog's GRANT statement spells it: "WRITE VOLUME"
    securable_type: str  # "catalog", "schema", "volume"
    full_name: str
    refused: str  # what fails without it

    def warning(self) -> str:
        return f"missing grant: {self.privilege} on {self.full_name} ({self.refused} will be refused)"


def artifacts_volume(settings: Settings) -> str | None:
    """`catalog.schema.volume` the child serves artifacts from; None when it is not a volume."""
    destination = child_artifacts_destination(settings)
    if not destination.startswith("dbfs:/Volumes/"):
        return None
    parts = destination.removeprefix("dbfs:/Volumes/").strip("/").split("/")
    return ".".join(parts[:3]) if len(parts) >= 3 else None


def needed_grants(settings: Settings) -> list[NeededGrant]:
    """The grants the app needs for its settings, catalogs and schemas first (see the module doc)."""
    volume = artifacts_volume(settings)
    if volume is None:
        return []
    catalog, schema = volume.split(".")[0], ".".join(volume.split(".")[:2])
    uses = "artifact uploads, downloads and model registration"
    needed = [
        NeededGrant("USE CATALOG", "catalog", catalog, uses),
        NeededGrant("USE SCHEMA", "schema", schema, uses),
        NeededGrant("READ VOLUME", "volume", volume, "artifact downloads and listing"),
        NeededGrant("WRITE VOLUME", "volume", volume, "artifact uploads"),
    ]
    if settings.registry_store_uri and uri_scheme(settings.registry_store_uri) == "databricks-uc":
        needed.append(NeededGrant("CREATE MODEL", "schema", schema, f"registering models in {schema}"))
    return needed


def missing_grants(needed: list[NeededGrant], effective: Callable[[str, str], set[str]]) -> list[str]:
    """A warning for each grant in `needed` that `effective(type, name)` (privileges held there,
    as the API spells them: `USE_CATALOG`, `ALL_PRIVILEGES`) lacks, or that could not be read."""
    warnings: list[str] = []
    held: dict[tuple[str, str], set[str] | None] = {}
    for grant in needed:
        key = (grant.securable_type, grant.full_name)
        if key not in held:
            try:
                held[key] = effective(*key)
            except GrantsUnreadable as exc:
                held[key] = None
                warnings.append(f"could not check grants on {grant.securable_type} {grant.full_name}: {exc}")
        privileges = held[key]
        if privileges is not None and "ALL_PRIVILEGES" not in privileges and grant.privilege.replace(" ", "_") not in privileges:
            warnings.append(grant.warning())
    return warnings


class GrantsUnreadable(Exception):
    """The workspace would not say which grants the app holds on a securable; the message says why."""


def folder_warnings(folder: str | None, may_create_in: Callable[[str], bool]) -> list[str]:
    """A warning when the app may not create experiments in `folder`; none without a folder."""
    if folder is None:
        return []
    try:
        if may_create_in(folder):
            return []
    except GrantsUnreadable as exc:
        return [f"could not check the experiment folder {folder}: {exc}"]
    return [f"missing grant: {CREATE_PERMISSION} on folder {folder} (creating experiments named without a folder will be refused)"]


class WorkspaceGrants:
    """What the app's own principal may do, asked through databricks-sdk with bounded timeouts."""

    def __init__(self):
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        self.client = WorkspaceClient(config=Config(http_timeout_seconds=CHECK_HTTP_TIMEOUT_SECONDS, retry_timeout_seconds=int(CHECK_HTTP_TIMEOUT_SECONDS)))
        self.principal = self.client.current_user.me().user_name  # a service principal's is its application id

    def effective(self, securable_type: str, full_name: str) -> set[str]:
        """The privileges held on a Unity Catalog securable, directly or inherited (`USE_CATALOG`, …)."""
        from databricks.sdk.errors import DatabricksError

        try:
            found = self.client.grants.get_effective(securable_type, full_name, principal=self.principal)
        except DatabricksError as exc:
            raise GrantsUnreadable(sdk_reason(exc)) from None
        return {p.privilege.value for a in found.privilege_assignments or [] if a.principal == self.principal for p in a.privileges or [] if p.privilege}

    def may_create_in(self, folder: str) -> bool:
        """Whether an item can be made in `folder`: an empty folder made there and deleted again."""
        from databricks.sdk.errors import DatabricksError, PermissionDenied

        probe = f"{folder.rstrip('/')}/{WRITE_PROBE}"
        try:
            self.client.workspace.mkdirs(probe)
        except PermissionDenied:
            return False
        except DatabricksError as exc:
            raise GrantsUnreadable(sdk_reason(exc)) from None
        try:
            self.client.workspace.delete(probe)
        except DatabricksError as exc:  # the folder stays; it is empty and says what it is
            log.warning("experiment folder check: could not delete %s (%s)", probe, sdk_reason(exc))
        return True


def check_grants(settings: Settings, timeout: float = CHECK_TIMEOUT_SECONDS) -> list[str]:
    """The warnings for `settings` (see the module doc), within about `timeout` seconds; a check that
    fails as a whole is one warning. Never raises."""
    needed, folder = needed_grants(settings), child_experiment_folder(settings)
    if not needed and folder is None:
        return []
    redact = Redactor.from_environment()

    def check() -> list[str]:
        workspace = WorkspaceGrants()
        return missing_grants(needed, workspace.effective) + folder_warnings(folder, workspace.may_create_in)

    try:
        return [redact(warning) for warning in call_with_deadline(check, timeout, "grants-check")]
    except DeadlinePassed:
        return [f"could not check the app's grants: the workspace did not answer within {timeout:.0f} s"]
    except Exception as exc:  # noqa: BLE001 - a warning, never a failed start
        return [redact(f"could not check the app's grants ({type(exc).__name__}: {sdk_reason(exc)})")]


def report_grants(settings: Settings, add_warning: Callable[[str], bool]) -> None:
    """Run the check and hand each warning to `add_warning` (the front's StartupWarnings.add), logging
    each new one once."""
    for warning in check_grants(settings):
        if add_warning(warning):
            log.warning("%s", warning)
