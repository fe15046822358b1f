"""Faults under a real app: MLflow hung, killed mid-traffic, or unable to start at all."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.app_process import AppProcess, free_port

pytestmark = pytest.mark.e2e
UPSTREAM_TIMEOUT = 3.0


def signal_mlflow(app: AppProcess, sig: int) -> None:
    for pid in app.mlflow_pids():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def is_mlflow_error(response: httpx.Response, statuses: set[int]) -> bool:
    if response.status_code not in statuses:
        return False
    body = response.json()
    return set(body) == {"error_code", "message"} and "Traceback" not in body["message"]


@pytest.fixture(scope="module")
def faulty_app(tmp_path_factory):
    """An app of its own, with short timeouts so hangs are noticed within seconds."""
    app = AppProcess(
        tmp_path_factory.mktemp("faulty-app"),
        "--upstream-timeout", str(UPSTREAM_TIMEOUT),
        "--mlflow-probe-interval", "1",
        "--mlflow-probe-failures", "3",
    ).start()  # fmt: skip
    try:
        yield app.wait_ready()
    finally:
        app.stop()


def test_hung_mlflow_gets_504_at_the_timeout_and_is_replaced(faulty_app):
    app = faulty_app
    created = httpx.post(f"{app.url}/api/2.0/mlflow/experiments/create", json={"name": "before-the-hang"})
    experiment_id = created.json()["experiment_id"]
    restarts_before = app.health().json()["mlflow"]["restarts"]

    signal_mlflow(app, signal.SIGSTOP)  # alive but answering nothing
    try:
        started = time.monotonic()
        slow = httpx.get(f"{app.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id}, timeout=30)
        waited = time.monotonic() - started
        assert is_mlflow_error(slow, {504}), slow.text
        assert slow.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert UPSTREAM_TIMEOUT - 0.5 < waited < UPSTREAM_TIMEOUT + 3

        # The front itself stays responsive meanwhile.
        started = time.monotonic()
        assert httpx.get(f"{app.url}/").status_code == 200
        assert httpx.get(f"{app.url}/health").status_code in (200, 503)
        assert time.monotonic() - started < 1.5
    finally:
        signal_mlflow(app, signal.SIGCONT)  # no-op once the supervisor has replaced it

    def replaced() -> bool:
        health = app.health()
        return health is not None and health.json()["mlflow"]["restarts"] > restarts_before

    # Still frozen, it fails its health checks and is replaced.
    signal_mlflow(app, signal.SIGSTOP)
    app.wait_until(replaced, 60, "the hung MLflow to be replaced")
    app.wait_ready()
    mlflow = app.health().json()["mlflow"]
    assert "stopped answering its health check" in mlflow["last_exit_reason"]
    after = httpx.get(f"{app.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
    assert after.json()["experiment"]["name"] == "before-the-hang"


def test_mlflow_killed_mid_traffic_loses_nothing_committed(faulty_app):
    app = faulty_app
    run = httpx.post(f"{app.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}).json()["run"]
    run_id = run["info"]["run_id"]
    committed: list[int] = []
    refused: list[httpx.Response] = []
    unexpected: list[str] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            step = offset
            while not stop.is_set():
                response = client.post(
                    f"{app.url}/api/2.0/mlflow/runs/log-metric",
                    json={"run_id": run_id, "key": "m", "value": step, "timestamp": 0, "step": step},
                )
                if response.status_code == 200:
                    committed.append(step)
                elif is_mlflow_error(response, {502, 503, 504}):
                    refused.append(response)
                    time.sleep(0.2)
                else:
                    unexpected.append(f"{response.status_code} {response.text[:200]}")
                step += 4

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        app.wait_until(lambda: len(committed) >= 20, 30, "some writes to commit")
        signal_mlflow(app, signal.SIGKILL)
        app.wait_until(lambda: len(refused) > 0, 30, "writes to be refused while MLflow is down")
        app.wait_ready()
        count = len(committed)
        app.wait_until(lambda: len(committed) >= count + 20, 60, "writes to resume after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert unexpected == []
    history = httpx.get(f"{app.url}/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": "m", "max_results": 100000}).json()["metrics"]
    stored = {int(m["step"]) for m in history}
    assert set(committed) <= stored  # every write that answered 200 survived the kill


def test_mlflow_that_cannot_start_is_reported_as_a_crash_loop(tmp_path):
    unreachable = free_port()  # nothing listens there
    app = AppProcess(
        tmp_path,
        "--backend-store-uri", f"postgresql://mlflow:hunter2-secret-pw@127.0.0.1:{unreachable}/mlflow",
    ).start()  # fmt: skip
    try:

        def in_crash_loop() -> bool:
            health = app.health()
            return health is not None and health.json()["mlflow"].get("crash_loop", False)

        app.wait_until(in_crash_loop, 150, "/health to report a crash loop")
        health = app.health()
        assert health.status_code == 503
        body = health.json()
        assert "crash loop" in body["reason"]
        assert body["mlflow"]["last_output"], "MLflow's last lines say why it cannot start"
        # The database check before each start says what is wrong, in one line (launcher/database_check.py).
        assert f"cannot reach PostgreSQL at 127.0.0.1:{unreachable} (connection refused)" in body["mlflow"]["last_exit_reason"]
        assert body["reason"].endswith(body["mlflow"]["last_exit_reason"])
        assert "crash loop" in app.log_text()
        # Backoff, not a tight loop: a handful of starts in this time, not dozens.
        assert body["mlflow"]["restarts"] <= 6
        for text in (health.text, app.log_text()):
            assert "hunter2-secret-pw" not in text
        # The front itself keeps serving the UI and answering clients with JSON.
        assert httpx.get(f"{app.url}/").status_code == 200
        assert is_mlflow_error(httpx.get(f"{app.url}/api/2.0/mlflow/experiments/search"), {503})
    finally:
        tree = [p.pid for p in app.tree()]
        app.stop()
        assert not [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
