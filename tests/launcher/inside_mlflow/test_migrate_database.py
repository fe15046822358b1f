"""The database script the MLflow child runs before each start: what its messages say, the schema head it reads."""

from __future__ import annotations

import importlib.util

import pytest

from launcher.inside_mlflow.migrate_database import describe_failure, schema_head

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


def test_schema_head_read_from_the_files_is_mlflows_own():
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert schema_head() == _get_latest_schema_revision()


def test_schema_head_is_none_without_mlflow(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert schema_head() is None
