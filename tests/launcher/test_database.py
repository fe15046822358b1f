"""The database check before MLflow starts: which stores, what its messages say, the child it runs."""

from __future__ import annotations

import importlib.util
import os

import pytest

from launcher.database import DatabaseCheck, describe_failure, postgres_store_uris, schema_head, store_passwords
from launcher.settings import Settings, SettingsError, check_database_driver
from tests.app_process import free_port

URI = "postgresql://mlflow:s3cret-pw@db.internal:5433/tracking"


class DriverError(Exception):
    """Stands in for psycopg.OperationalError, wrapped by SQLAlchemy as `.orig`."""


class Wrapped(Exception):
    def __init__(self, message: str):
        super().__init__(f"(psycopg.OperationalError) {message}")
        self.orig = DriverError(message)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('connection failed: connection to server at "10.0.0.5", port 5433 failed: FATAL:  password authentication failed for user "mlflow"',
         'PostgreSQL at db.internal:5433 refused the password for user "mlflow"; correct the user and password in --backend-store-uri (or PGPASSWORD).'),
        ("connection failed: fe_sendauth: no password supplied",
         'PostgreSQL at db.internal:5433 wants a password for user "mlflow" and none was given; put it in --backend-store-uri or in PGPASSWORD.'),
        ('connection failed: connection to server at "10.0.0.5", port 5433 failed: FATAL:  database "tracking" does not exist',
         'PostgreSQL at db.internal:5433 has no database "tracking"; create it (CREATE DATABASE tracking OWNER mlflow) or correct --backend-store-uri.'),
        ('connection failed: FATAL:  role "mlflow" does not exist',
         "PostgreSQL at db.internal:5433 has no user \"mlflow\"; create it (CREATE ROLE mlflow LOGIN PASSWORD '…') or correct --backend-store-uri."),
        ('connection failed: connection to server at "10.0.0.5", port 5433 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?',
         "cannot reach PostgreSQL at db.internal:5433 (connection refused); check the host and port in --backend-store-uri and that the server is running."),
        ("connection failed: timeout expired",
         "PostgreSQL at db.internal:5433 did not answer within 10 s; check the host in --backend-store-uri, the network and firewalls."),
        ("failed to resolve host 'db.internal': [Errno -2] Name or service not known",
         "cannot resolve the host of --backend-store-uri (db.internal); correct the host name."),
        ("permission denied for schema public",
         'user "mlflow" may not change database "tracking" on db.internal:5433 (permission denied for schema public); make it the database\'s owner (ALTER DATABASE tracking OWNER TO mlflow).'),
        ("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
         "PostgreSQL at db.internal:5433: server closed the connection unexpectedly"),
    ],
    ids=["password", "no-password", "no-database", "no-role", "refused", "timeout", "dns", "permission", "other"],
)  # fmt: skip
def test_each_failure_is_one_line_saying_what_to_change(message, expected):
    line = describe_failure(Wrapped(message), URI, "--backend-store-uri")
    assert line == expected
    assert "\n" not in line and "s3cret-pw" not in line


def test_a_missing_driver_names_the_extra():
    line = describe_failure(ModuleNotFoundError("No module named 'psycopg'", name="psycopg"), URI, "--backend-store-uri")
    assert "uv sync --extra postgres" in line


def test_a_missing_driver_stops_serve_before_anything_starts(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a))
    with pytest.raises(SettingsError, match=r"^--backend-store-uri: the PostgreSQL driver 'psycopg' is not installed; install mlflow-app with its postgres extra"):
        check_database_driver("--backend-store-uri", URI)
    check_database_driver("--backend-store-uri", "sqlite:///x.db")  # other stores need no driver of ours


def test_only_postgresql_stores_are_checked_each_once(tmp_path):
    assert postgres_store_uris(Settings(data_dir=tmp_path)) == []  # the embedded SQLite default
    assert postgres_store_uris(Settings(backend_store_uri=URI)) == [("--backend-store-uri", URI)]
    assert postgres_store_uris(Settings(backend_store_uri=URI, registry_store_uri=URI)) == [("--backend-store-uri", URI)]
    other = "postgresql+psycopg://reg@db.internal/registry"
    assert postgres_store_uris(Settings(backend_store_uri=URI, registry_store_uri=other)) == [
        ("--backend-store-uri", URI), ("--registry-store-uri", other)
    ]  # fmt: skip
    assert postgres_store_uris(Settings(backend_store_uri="mysql://u:p@h/db", registry_store_uri="databricks-uc")) == []


def test_passwords_inside_store_uris_are_secrets():
    settings = Settings(backend_store_uri="postgresql://u:p%40ss-w0rd@h/db", registry_store_uri="sqlite:///r.db")
    assert set(store_passwords(settings)) == {"p%40ss-w0rd", "p@ss-w0rd"}
    assert store_passwords(Settings()) == ()


def test_schema_head_read_from_the_files_is_mlflows_own():
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert schema_head() == _get_latest_schema_revision()


def test_schema_head_is_none_without_mlflow(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert schema_head() is None


async def test_the_check_runs_a_child_and_returns_its_one_line():
    closed = free_port()
    check = DatabaseCheck([("--backend-store-uri", f"postgresql://mlflow:s3cret-pw@127.0.0.1:{closed}/mlflow")], env=dict(os.environ))
    output: list[str] = []

    code, reason = await check(output.append)

    assert code == 1
    assert reason == (
        f"cannot use its database: cannot reach PostgreSQL at 127.0.0.1:{closed} (connection refused); "
        "check the host and port in --backend-store-uri and that the server is running."
    )
    assert output[-1] == f"ERROR database: {reason.removeprefix('cannot use its database: ')}"
    assert not any("s3cret-pw" in line for line in output)

