"""The app's own life: MLflow dying under it, and stopping with nothing left behind."""

from __future__ import annotations

import signal

import httpx
import psutil
import pytest

from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e
PLATFORM_STOP_DEADLINE = 15  # Databricks Apps sends SIGKILL 15 s after SIGTERM


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_mlflow_killed_is_restarted_and_sigterm_leaves_no_process(tmp_path):
    app = AppProcess(tmp_path).start()
    try:
        app.wait_ready()
        created = httpx.post(f"{app.url}/api/2.0/mlflow/experiments/create", json={"name": "before-the-crash"})
        assert created.status_code == 200
        experiment_id = created.json()["experiment_id"]
        first_generation = app.mlflow_pids()
        assert first_generation, "MLflow should run as a child of the front"

        # The MLflow CLI dies hard; its uvicorn worker is orphaned, still holding the port.
        psutil.Process(first_generation[0]).kill()
        app.wait_until(lambda: app.health().status_code == 503, 30, "/health to report MLflow down")
        down = app.health().json()
        assert down["status"] == "unavailable"
        assert down["mlflow"]["state"] in ("restarting", "starting")
        during = httpx.get(f"{app.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
        assert during.status_code == 503
        assert during.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert httpx.get(f"{app.url}/").status_code == 200  # the UI shell stays up meanwhile

        app.wait_ready()
        health = app.health().json()
        assert health["mlflow"]["restarts"] == 1
        assert health["mlflow"]["last_exit_code"] == -signal.SIGKILL
        assert alive(first_generation) == []  # the orphaned worker was cleared, not left behind
        after = httpx.get(f"{app.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
        assert after.json()["experiment"]["name"] == "before-the-crash"

        tree = [p.pid for p in app.tree()]
        seconds = app.stop(signal.SIGTERM, timeout=PLATFORM_STOP_DEADLINE + 5)
        assert seconds < PLATFORM_STOP_DEADLINE
        assert app.process.returncode == 0
        assert alive(tree) == []
        assert "mlflow-app stopped" in app.log_text()
    finally:
        app.kill_leftovers()


def test_ctrl_c_while_mlflow_is_still_starting_stops_everything(tmp_path):
    app = AppProcess(tmp_path).start()
    try:
        app.wait_until(lambda: app.health() is not None and app.mlflow_pids(), 60, "the front and the MLflow child to start")
        starting = app.health()
        assert starting.status_code == 503 and starting.json()["mlflow"]["state"] == "starting"
        assert httpx.get(f"{app.url}/").status_code == 200  # the UI answers before MLflow is ready
        tree = [p.pid for p in app.tree()]
        seconds = app.stop(signal.SIGINT, timeout=PLATFORM_STOP_DEADLINE + 5)
        assert seconds < PLATFORM_STOP_DEADLINE
        assert alive(tree) == []
    finally:
        app.kill_leftovers()
