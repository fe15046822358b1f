"""The database check before MLflow starts, the front's side: which stores, their passwords, the child it runs."""

from __future__ import annotations

import importlib.util
import os

import pytest

from launcher.database_check import DatabaseCheck, postgres_store_uris, store_passwords
from launcher.settings import Settings, SettingsError, check_database_driver
from tests.app_process import free_port

URI = "postgresql://mlflow:s3cret-pw@db.internal:5433/tracking"


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


async def test_the_check_runs_a_child_and_returns_its_one_line():
    closed = free_port()
    check = DatabaseCheck([("--backend-store-uri", f"postgresql://mlflow:s3cret-pw@127.0.0.1:{closed}/mlflow")], env=dict(os.environ))
    output: list[str] = []

    code, reason = await check(output.append)

    assert code == 1
    assert reason == (
        f"cannot use its database: cannot reach PostgreSQL at 127.0.0.1:{closed} (connection refused); check the host and port in --backend-store-uri and that the server is running."
    )
    assert output[-1] == f"ERROR database: {reason.removeprefix('cannot use its database: ')}"
    assert not any("s3cret-pw" in line for line in output)
