"""`/metrics` of the real app after real mlflow client calls: API names as routes, MLflow up."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def samples(app) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{app.url}/metrics", timeout=10)
    assert response.status_code == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_show_client_calls_by_api_name_and_mlflow_up(app, tracking):
    experiment_id = tracking.create_experiment(f"metrics-{uuid.uuid4().hex[:8]}")
    run = tracking.create_run(experiment_id)
    tracking.log_metric(run.info.run_id, "loss", 0.5)
    tracking.get_run(run.info.run_id)

    deadline = time.monotonic() + 5  # each request is recorded once its last byte is sent
    while True:
        found = samples(app)
        get_run = found.get(
            ("mlflow_app_requests_total", frozenset({"method": "GET", "route": "/api/2.0/mlflow/runs/get", "status": "200"}.items())),
            0,
        )
        if get_run >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    assert get_run >= 1
    routes = {dict(labels).get("route") for name, labels in found if name == "mlflow_app_requests_total"}
    assert {"/api/2.0/mlflow/experiments/create", "/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/log-metric"} <= routes
    assert not any(run.info.run_id in route for route in routes if route)
    upstream = found[("mlflow_app_upstream_duration_seconds_count", frozenset({"route": "/api/2.0/mlflow/runs/get"}.items()))]
    assert upstream >= 1
    assert found[("mlflow_app_mlflow_up", frozenset())] == 1
    assert found[("mlflow_app_mlflow_uptime_seconds", frozenset())] > 0
    assert found[("process_resident_memory_bytes", frozenset())] > 0
