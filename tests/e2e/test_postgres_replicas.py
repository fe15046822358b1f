"""PostgreSQL as the backend store, and two replicas sharing it and one artifact store.

One real PostgreSQL cluster (tests/postgres_server.py) and two `mlflow-app serve` processes started
at the same moment on its empty database, as behind a load balancer. The client workflow tests of
test_client_tracking.py and test_client_artifacts_models.py run again here, against replica A.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from launcher.inside_mlflow.migrate_database import schema_head
from tests.app_process import AppProcess
from tests.e2e.test_client_artifacts_models import (  # noqa: F401
    iris_model,
    test_artifacts_travel_over_http,
    test_model_registry_workflow,
)
from tests.e2e.test_client_tracking import (  # noqa: F401 - collected here again, on PostgreSQL
    test_deleted_run_is_hidden_then_restored,
    test_duplicate_experiment_is_mlflows_own_error,
    test_experiment_lifecycle,
    test_log_batch_and_search_with_filters_and_ordering,
    test_runs_params_metrics_tags_and_nesting,
)

pytestmark = pytest.mark.e2e

DB_PASSWORD = "pgPASSWORDe41c9a0b7d"  # distinctive: finding it in any output is a leak


@pytest.fixture(scope="module")
def replicas(postgres, tmp_path_factory) -> tuple[AppProcess, AppProcess]:
    """Two replicas on one new database and one artifact directory, started together."""
    uri = postgres.create_database("mlflow", "mlflow", DB_PASSWORD)
    base = tmp_path_factory.mktemp("replicas")
    # Replica A's own data/artifacts, so that the imported artifact test finds the files there.
    shared_artifacts = base / "a" / "data" / "artifacts"
    started = [AppProcess(base / name, "--backend-store-uri", uri, "--artifacts-destination", str(shared_artifacts)).start() for name in ("a", "b")]
    try:
        for replica in started:
            replica.wait_ready(timeout=300)  # the first start creates the schema
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture(scope="module")
def app(replicas) -> AppProcess:
    """Replica A stands in for the shared SQLite app in the imported client workflow tests."""
    return replicas[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_the_schema_is_created_once_while_the_replicas_start_together(replicas, postgres):
    logs = [replica.log_text() for replica in replicas]
    assert sum("creating MLflow's tables" in text for text in logs) == 1, "one replica migrates, the other waits"
    assert postgres.sql("SELECT version_num FROM alembic_version", "mlflow") == schema_head()
    for text in logs:
        assert "restarting in" not in text and "Traceback" not in text
        assert DB_PASSWORD not in text
        assert "postgresql://mlflow:***@127.0.0.1" in text  # the URI is logged, its password masked


def test_replicas_behind_a_load_balancer_lose_and_duplicate_nothing(replicas):
    from mlflow import MlflowClient

    urls = [replica.url for replica in replicas]
    clients = [MlflowClient(tracking_uri=url, registry_uri=url) for url in urls]
    experiment_id = clients[0].create_experiment(unique("replicas"))
    model = unique("shared-model")
    clients[1].create_registered_model(model)
    workers, steps = 8, 15
    start_together = threading.Barrier(workers)

    def worker(i: int) -> tuple[str, str]:
        """Every call goes to the other replica than the one before, as a load balancer may send it."""
        start_together.wait(30)
        run = clients[i % 2].create_run(experiment_id, run_name=f"worker-{i}")
        run_id = run.info.run_id
        for step in range(steps):
            clients[(i + step) % 2].log_metric(run_id, "m", value=i * 1000 + step, step=step)
        clients[(i + 1) % 2].log_param(run_id, "worker", str(i))
        clients[i % 2].log_text(run_id, f"written by worker {i}", f"out/worker-{i}.txt")
        clients[(i + 1) % 2].set_terminated(run_id)
        version = clients[(i + 1) % 2].create_model_version(model, source=f"{run.info.artifact_uri}/out", run_id=run_id)
        return run_id, version.version

    with ThreadPoolExecutor(workers) as pool:
        written = list(pool.map(worker, range(workers)))
    run_ids = {run_id: i for i, (run_id, _) in enumerate(written)}
    assert len(run_ids) == workers
    clients[0].set_registered_model_alias(model, "latest-written", written[-1][1])

    for client, url in zip(clients, urls):
        runs = client.search_runs([experiment_id], max_results=1000)
        assert sorted(r.info.run_id for r in runs) == sorted(run_ids), f"every run, once, through {url}"
        for run in runs:
            i = run_ids[run.info.run_id]
            assert (run.info.status, run.data.params) == ("FINISHED", {"worker": str(i)})
            history = client.get_metric_history(run.info.run_id, "m")
            assert sorted((m.step, m.value) for m in history) == [(s, i * 1000 + s) for s in range(steps)]
            artifact = httpx.get(f"{url}/get-artifact", params={"run_id": run.info.run_id, "path": f"out/worker-{i}.txt"})
            assert (artifact.status_code, artifact.text) == (200, f"written by worker {i}")
        versions = client.search_model_versions(f"name = '{model}'")
        assert sorted(int(v.version) for v in versions) == list(range(1, workers + 1)), "no version lost or numbered twice"
        assert {v.run_id for v in versions} == set(run_ids)
        assert client.get_model_version_by_alias(model, "latest-written").run_id == written[-1][0]


def test_wrong_database_password_is_one_readable_line_in_health(postgres, tmp_path):
    wrong = "wrongPASSWORD7f2d0c9e1b"
    app = AppProcess(tmp_path, "--backend-store-uri", postgres.uri("mlflow", wrong, "mlflow")).start()
    try:
        app.wait_until(lambda: (r := app.health()) is not None and "last_exit_reason" in r.json()["mlflow"], 90, "a failed start")
        health = app.health()
        assert health.status_code == 503
        reason = health.json()["mlflow"]["last_exit_reason"]
        assert reason == (
            f'cannot use its database: PostgreSQL at 127.0.0.1:{postgres.port} refused the password for user "mlflow"; correct the user and password in --backend-store-uri (or PGPASSWORD).'
        )
        assert health.json()["reason"].endswith(f"; last: mlflow {reason}")
        log = app.log_text()
        assert reason in log
        assert "started MLflow" not in log, "MLflow is not started against a database it cannot use"
        assert wrong not in log and wrong not in health.text
    finally:
        app.stop()
