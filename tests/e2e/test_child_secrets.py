"""A store's password reaches the MLflow child through its environment, never a command line
(issue 11, item 3).

Every local user can read any process's command line (`ps`, /proc/<pid>/cmdline); only the
process's own user can read its environment (/proc/<pid>/environ, mode 0400). The app runs on a real
PostgreSQL (tests/postgres_server.py) whose URI, password included, is set only in the environment,
as a platform's secret would be, and every process of the app's tree is read while it serves.
"""

from __future__ import annotations

import urllib.parse
import uuid
from pathlib import Path

import psutil
import pytest

from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e

DB_PASSWORD = "pgCHILDsecret5e8a1c3f9b"  # distinctive: finding it anywhere outside an environment is a leak
REGISTRY_PASSWORD = "pgREGISTRYsecret0d7b4e2a6c"


@pytest.fixture(scope="module")
def store_uris(postgres) -> dict[str, str]:
    """The stores, by the environment variables the app reads them from: a tracking and a registry database."""
    return {
        "MLFLOW_BACKEND_STORE_URI": postgres.create_database("tracking", "tracker", DB_PASSWORD),
        "MLFLOW_REGISTRY_STORE_URI": postgres.create_database("registry", "registrar", REGISTRY_PASSWORD),
    }


def secret_forms(secret: str) -> set[bytes]:
    return {secret.encode(), urllib.parse.quote(secret, safe="").encode()}


def command_line(process: psutil.Process) -> bytes:
    """The raw /proc/<pid>/cmdline: what `ps` shows every user (NUL-separated arguments)."""
    return Path(f"/proc/{process.pid}/cmdline").read_bytes()


def command_lines(app: AppProcess) -> dict[int, bytes]:
    lines = {}
    for process in app.tree():
        try:
            lines[process.pid] = command_line(process)
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile (e.g. a database check that has finished)
    return lines


def create_and_read_an_experiment(app: AppProcess) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=app.url, registry_uri=app.url)
    name = f"child-secrets-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    assert client.get_experiment(experiment_id).name == name
    model = f"model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    assert client.get_registered_model(model).name == model


@pytest.mark.parametrize(
    ("arguments", "at_least"),
    [
        ([], 2),  # MLflow in one process (launcher/inside_mlflow/serve_mlflow.py): the front and the child
        (["--workers", "2"], 5),  # `mlflow server`, its uvicorn, two workers (and multiprocessing's helpers)
        (["--workers", "2", "--job-execution"], 7),  # plus MLflow's job runner and its huey consumers
    ],
    ids=["one-process", "mlflow-server-workers", "job-runner"],
)
def test_no_process_of_the_app_has_a_store_password_on_its_command_line(tmp_path, store_uris, arguments, at_least):
    app = AppProcess(tmp_path, *arguments, env=store_uris).start()
    try:
        app.wait_ready(timeout=300)
        create_and_read_an_experiment(app)
        lines = command_lines(app)
        assert len(lines) >= at_least, f"expected the front, MLflow and its workers: {lines}"
        for secret in (DB_PASSWORD, REGISTRY_PASSWORD):
            leaks = {pid: line for pid, line in lines.items() if any(form in line for form in secret_forms(secret))}
            assert not leaks, f"a store password on the command line of {sorted(leaks)}: {leaks}"
        # It did reach MLflow, through the environment only its user can read.
        child = psutil.Process(app.mlflow_pids()[0])
        assert child.environ().get("MLFLOW_BACKEND_STORE_URI") == store_uris["MLFLOW_BACKEND_STORE_URI"]
        log = app.log_text()
        assert DB_PASSWORD not in log and REGISTRY_PASSWORD not in log
        assert "Traceback" not in log
    finally:
        app.stop()
