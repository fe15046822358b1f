"""Every MLflow internal that code inside the MLflow child relies on, in one place.

MLflow offers no public way to do these. Each is named here as found in the MLflow releases of
`TESTED_MLFLOW`, and tests/launcher/inside_mlflow/test_mlflow_internals.py holds MLflow to it, so an
upgrade fails there first. On any other release importing this module raises `UntestedMlflow` (an
ImportError) with one line saying what to install: the workspace plugin then stops the child and
the schema migration touches nothing, each with that line, which `/health` shows.

The workspace plugin (workspace_plugin/) relies on:
- `mlflow.server.handlers._get_tracking_store()` and `_get_model_registry_store()`: the server's own
  store instances, built once per worker from the server's environment (and setting the process's
  tracking and registry URIs);
- `mlflow.server.handlers._artifact_repo`: the repository the server's `mlflow-artifacts` routes
  use, cached in that global (`_get_artifact_repo_mlflow_artifacts` builds it only while it is None);
- `mlflow.server.ARTIFACTS_DESTINATION_ENV_VAR` and `SERVE_ARTIFACTS_ENV_VAR`: how `mlflow server`
  hands `--artifacts-destination` and `--serve-artifacts` ("true") to its workers;
- `mlflow.store._unity_catalog.registry.rest_store.UcModelRegistryStore`, the Unity Catalog registry
  store, and the parameters of the methods the plugin overrides (`REGISTRY_METHODS`);
- class swaps: the server's stores are plain Python objects whose `__class__` can be set to a
  subclass of their class, so an adaptation reaches the server's instance only and MLflow's
  isinstance checks still hold; the tracking store's `create_experiment(name, artifact_location, tags)`;
- `mlflow.entities.model_registry.ModelVersion` keeps its whole state in its instance `__dict__`,
  which UC's `ModelVersionSearch` (a subclass) shares, so a search result's state makes a plain version.

The schema migration (migrate_database.py) relies on:
- `mlflow.store.db.utils`: `_all_tables_exist`, `_initialize_tables`, `_get_latest_schema_revision`,
  `_get_schema_version`, `_get_alembic_config` and `_upgrade_db`, what MLflow's SQL store runs on start;
- MLflow's alembic revisions, `mlflow/store/db_migrations/versions/*.py`, each with a top-level
  `revision = "…"` and `down_revision = …` line: read as text, so the usual start imports no MLflow.

Where MLflow has a public extension point that does the job, the plugin uses it instead: the
`mlflow-artifacts` scheme inside the child is the `mlflow.artifact_repository` entry point the
launcher declares (workspace_plugin/artifacts.py, `proxied_repository`).

Importing this module imports no MLflow (the migration's usual start must not pay for it): each
function imports what it uses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from launcher.client.mlflow_release import untested_message
from launcher.mlflow_package import mlflow_package_dir, mlflow_version

# The Unity Catalog registry store's methods the plugin overrides, with the parameters it passes on.
REGISTRY_METHODS = {
    "search_registered_models": ("filter_string", "max_results", "order_by", "page_token"),
    "search_model_versions": ("filter_string", "max_results", "order_by", "page_token"),
    "create_model_version": ("name", "source", "run_id", "tags", "run_link", "description", "local_model_path", "model_id"),
    "get_model_version": ("name", "version"),
    "get_model_version_download_uri": ("name", "version"),
}
DB_UTILS = ("_all_tables_exist", "_initialize_tables", "_get_latest_schema_revision", "_get_schema_version", "_get_alembic_config", "_upgrade_db")
_REVISION = re.compile(r"^revision\s*=\s*[\"'](\w+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.MULTILINE)


class UntestedMlflow(ImportError):
    """The installed MLflow is not a release this module was tested with."""


def untested_mlflow(installed: str | None) -> str | None:
    """The one line that refuses `installed` (an MLflow version); None for a tested release."""
    return untested_message(installed, "MLflow server plugin and schema migration")


def require_tested_mlflow(installed: str | None = None) -> None:
    """Raise UntestedMlflow unless the installed MLflow (or `installed`) is a tested release."""
    if message := untested_mlflow(installed if installed is not None else mlflow_version()):
        raise UntestedMlflow(message)


require_tested_mlflow()


# --- the workspace plugin ---------------------------------------------------------------------


def server_stores():
    """(tracking store, registry store): the instances MLflow's server handlers use in this worker."""
    from mlflow.server import handlers

    return handlers._get_tracking_store(), handlers._get_model_registry_store()


def served_artifacts_destination() -> str | None:
    """The server's `--artifacts-destination` when it serves artifacts (`--serve-artifacts`); else None."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR

    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR)
    return destination if destination and os.environ.get(SERVE_ARTIFACTS_ENV_VAR) == "true" else None


def serve_artifacts_from(repository) -> None:
    """Make the server's `mlflow-artifacts` routes use `repository` instead of the destination's own."""
    from mlflow.server import handlers

    handlers._artifact_repo = repository


def is_unity_catalog_registry_store(store) -> bool:
    from mlflow.store._unity_catalog.registry.rest_store import UcModelRegistryStore

    return isinstance(store, UcModelRegistryStore)


def adapt_instance(instance, subclass: type) -> None:
    """Give `instance` the behaviour of `subclass`, a subclass of its class, on that instance only."""
    if not issubclass(subclass, type(instance)):
        raise TypeError(f"{subclass.__name__} is not a subclass of {type(instance).__name__}")
    instance.__class__ = subclass


def as_model_version(found):
    """`found` (a ModelVersion, or a subclass such as UC's ModelVersionSearch) as a plain ModelVersion."""
    from mlflow.entities.model_registry import ModelVersion

    if type(found) is ModelVersion:
        return found
    plain = ModelVersion.__new__(ModelVersion)
    plain.__dict__.update(found.__dict__)
    return plain


# --- the schema migration ---------------------------------------------------------------------


def migration_files() -> list[Path]:
    """MLflow's alembic revision files, found without importing MLflow; [] when there are none."""
    package = mlflow_package_dir()
    return sorted((package / "store" / "db_migrations" / "versions").glob("*.py")) if package else []


def schema_head() -> str | None:
    """The newest schema revision of the installed MLflow, read from its migration files as text.

    None when the files do not show exactly one head (the caller then asks MLflow itself)."""
    revisions, parents = set(), set()
    for path in migration_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if revision := _REVISION.search(text):
            revisions.add(revision.group(1))
        if down := _DOWN_REVISION.search(text):
            parents.update(re.findall(r"[\"'](\w+)[\"']", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def db_utils():
    """MLflow's `mlflow.store.db.utils` (seconds to import: only once the database has answered)."""
    from mlflow.store.db import utils

    return utils


def all_tables_exist(engine) -> bool:
    return db_utils()._all_tables_exist(engine)


def initialize_tables(engine) -> None:
    """Create MLflow's tables on an empty database, at the newest revision."""
    db_utils()._initialize_tables(engine)


def latest_schema_revision() -> str:
    return db_utils()._get_latest_schema_revision()


def schema_version(engine) -> str | None:
    """The revision alembic recorded in the database."""
    return db_utils()._get_schema_version(engine)


def knows_revision(revision: str | None) -> bool:
    """Whether `revision` is one of this MLflow's migrations (not one a newer MLflow made)."""
    from alembic.script import ScriptDirectory

    if revision is None:
        return False
    scripts = ScriptDirectory.from_config(db_utils()._get_alembic_config(db_url=""))
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises for a revision it has no file for
        return False


def upgrade_schema(engine) -> None:
    """Run MLflow's migrations from the database's revision to the newest."""
    db_utils()._upgrade_db(engine)
