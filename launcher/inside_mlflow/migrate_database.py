"""`python -m launcher.inside_mlflow.migrate_database`: a PostgreSQL store made ready before MLflow starts.

MLflow's server creates its tables when it finds an empty database, with no lock that spans
machines, so replicas starting together on a new database race. Before each MLflow start the
front's supervisor runs this script as a short child (launcher/database_check.py). It connects;
when the schema revision recorded in the database is the installed MLflow's newest, that is all (no
MLflow import, which costs seconds and hundreds of MB). Otherwise it takes a PostgreSQL advisory
lock and runs MLflow's own migrations: other replicas wait on the lock, then find the schema
current. A failure ends the script with one line saying what to change (FAILURE_PREFIX), which
becomes the reason `/health` gives.

It reads the store from its environment (URI_VARIABLE), never from its command line, and imports
none of the front's modules (launcher.mlflow_package is the standard library only). MLflow's
internals it relies on (its db utils, its migration files) go through mlflow_internals.py, which
refuses, in one line and before connecting, an MLflow release it was not tested with.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import unquote, urlsplit

URI_VARIABLE = "MLFLOW_APP_DATABASE_URI"  # to the child in its environment, not on its visible command line
OPTION_VARIABLE = "MLFLOW_APP_DATABASE_OPTION"
FAILURE_PREFIX = "ERROR database: "
CONNECT_TIMEOUT_SECONDS = 10
# pg_advisory_lock key: any fixed 64-bit number that other applications are unlikely to use.
MIGRATION_LOCK_KEY = 0x6D6C666C6F77_0001  # "mlflow", 1


def server_of(uri: str) -> tuple[str, str, str]:
    """(host:port, user, database) of a postgresql:// URI, for messages; never the password."""
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    where = f"[{host}]:{parts.port or 5432}" if ":" in host else f"{host}:{parts.port or 5432}"
    return where, unquote(parts.username or os.environ.get("PGUSER", "")), unquote(parts.path.lstrip("/"))


def first_line(text: str) -> str:
    """The part of a driver message worth a log line: no 'connection failed:' preamble, no hints."""
    text = re.sub(r"^(\(\S+\)\s*)?(connection failed:\s*)?(connection to server at [^,]+, port \d+ failed:\s*)?", "", text.strip())
    return " ".join(text.splitlines()[0].replace("FATAL:", "").split()) if text else ""


def describe_failure(exc: BaseException, uri: str, option: str) -> str:
    """One line that says what is wrong with the database and what to change."""
    where, user, database = server_of(uri)
    original = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    detail = first_line(str(original))
    lowered = detail.lower()
    if isinstance(exc, ModuleNotFoundError):
        return f"the PostgreSQL driver ({exc.name}) is not installed; install mlflow-app with its postgres extra (uv sync --extra postgres, or pip install 'mlflow-app[postgres]')."
    if "password authentication failed" in lowered:
        return f'PostgreSQL at {where} refused the password for user "{user}"; correct the user and password in {option} (or PGPASSWORD).'
    if "no password supplied" in lowered:
        return f'PostgreSQL at {where} wants a password for user "{user}" and none was given; put it in {option} or in PGPASSWORD.'
    if re.search(r'role ".*" does not exist', lowered):
        return f"PostgreSQL at {where} has no user \"{user}\"; create it (CREATE ROLE {user} LOGIN PASSWORD '…') or correct {option}."
    if re.search(r'database ".*" does not exist', lowered):
        return f'PostgreSQL at {where} has no database "{database}"; create it (CREATE DATABASE {database} OWNER {user}) or correct {option}.'
    if "no pg_hba.conf entry" in lowered:
        return f'PostgreSQL at {where} does not accept connections from this host for user "{user}" ({detail}); add an entry to its pg_hba.conf.'
    if "connection refused" in lowered:
        return f"cannot reach PostgreSQL at {where} (connection refused); check the host and port in {option} and that the server is running."
    if "timeout expired" in lowered or "timed out" in lowered:
        return f"PostgreSQL at {where} did not answer within {CONNECT_TIMEOUT_SECONDS} s; check the host in {option}, the network and firewalls."
    if "resolve host" in lowered or "translate host name" in lowered or "name or service not known" in lowered:
        return f"cannot resolve the host of {option} ({where.rsplit(':', 1)[0]}); correct the host name."
    if "permission denied" in lowered:
        return f'user "{user}" may not change database "{database}" on {where} ({detail}); make it the database\'s owner (ALTER DATABASE {database} OWNER TO {user}).'
    return f"PostgreSQL at {where}: {detail or type(original).__name__}"


def schema_head() -> str | None:
    """The newest schema revision of the installed MLflow, read from its migration files without
    importing MLflow (mlflow_internals.schema_head); None when they do not show exactly one."""
    from launcher.inside_mlflow import mlflow_internals

    return mlflow_internals.schema_head()


def current_revision(connection) -> str | None:
    """The schema revision alembic recorded in the database; None for a database without one."""
    if connection.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None:
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def prepare(uri: str) -> None:
    """Connect; unless the schema is already this MLflow's, migrate it, once across replicas."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        # Autocommit: this connection holds the session-level lock, and no table lock while
        # MLflow migrates on connections of its own.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            current = current_revision(connection)
            if current is not None and current == schema_head():  # the usual start: no lock, no MLflow import
                print(f"INFO database: schema is current ({current})", flush=True)
                return
            print("INFO database: waiting for the schema lock", flush=True)
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            try:
                if current_revision(connection) != schema_head():  # else another replica just migrated it
                    migrate_schema(engine)
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    finally:
        engine.dispose()


def migrate_schema(engine) -> None:
    """Create the schema on an empty database, upgrade an older one, refuse a newer one."""
    from launcher.inside_mlflow import mlflow_internals as mlflow  # MLflow's own steps: seconds to import, only now

    if not mlflow.all_tables_exist(engine):
        print("INFO database: creating MLflow's tables", flush=True)
        mlflow.initialize_tables(engine)
        return
    head = mlflow.latest_schema_revision()
    current = mlflow.schema_version(engine)
    if current == head:
        print(f"INFO database: schema is current ({head})", flush=True)
        return
    if not mlflow.knows_revision(current):
        raise SchemaNewerError(
            f"the database's schema ({current}) is not one this MLflow knows (its newest is {head}): a newer MLflow has migrated it; run the same mlflow-app version on every replica."
        )
    print(f"WARNING database: upgrading the schema from {current} to {head}", flush=True)
    mlflow.upgrade_schema(engine)


class SchemaNewerError(RuntimeError):
    """The schema was migrated by a newer MLflow than ours."""


def main() -> int:
    uri = os.environ.get(URI_VARIABLE, "")
    option = os.environ.get(OPTION_VARIABLE, "--backend-store-uri")
    try:
        from launcher.inside_mlflow import mlflow_internals  # noqa: F401 - refuses an MLflow release it was not tested with
    except ImportError as exc:  # before connecting: nothing is touched
        print(f"{FAILURE_PREFIX}{exc}", flush=True)
        return 1
    try:
        prepare(uri)
    except SchemaNewerError as exc:
        print(f"{FAILURE_PREFIX}{exc}", flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the operator
        print(f"{FAILURE_PREFIX}{describe_failure(exc, uri, option)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
