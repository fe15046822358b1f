"""The benchmark's harness works: its workloads against the shared app, tiny, with no timing asserted.

wrk and nginx are not needed here (CI does not install them); what only they run is covered by
rendering nginx's configuration and the report.
"""

from __future__ import annotations

import pytest

from bench import workloads
from bench.report import render
from bench.servers import Nginx

pytestmark = pytest.mark.e2e


def test_api_calls_are_valid_through_the_front(app):
    fixtures = workloads.create_fixtures(app.url)
    calls = workloads.api_calls(fixtures)
    assert [c.name for c in calls] == ["experiments/get", "runs/get", "runs/search", "runs/log-metric", "runs/log-batch"]
    workloads.check_calls(app.url, calls)  # raises on anything but 200


def test_ui_first_load_cold_warm_and_uncompressed(app):
    cold = workloads.page_load(app.url)
    warm = workloads.page_load(app.url, cache=cold.cache)
    plain = workloads.page_load(app.url, encoding="identity")
    assert cold.requests == plain.requests >= 4
    assert 0 < cold.wire_bytes < plain.wire_bytes  # compressed on the wire
    assert warm.requests < cold.requests  # hashed files are reused without asking
    assert warm.not_modified == warm.requests  # the rest revalidate to 304


def test_artifact_upload_and_download(app, tmp_path):
    blob = workloads.make_blob(tmp_path / "blob.bin", 1)
    up = workloads.upload(app.url, "bench-smoke/blob.bin", blob)
    down = workloads.download(app.url, "bench-smoke/blob.bin", blob.stat().st_size)
    assert up.bytes == down.bytes == 2**20
    workloads.delete_artifact(app.url, "bench-smoke/blob.bin")


def test_nginx_config_and_report_render(tmp_path):
    config = Nginx(tmp_path, mlflow_port=5001, port=5002).render().read_text()
    assert "server 127.0.0.1:5001;" in config and "listen 127.0.0.1:5002;" in config
    assert "proxy_request_buffering off;" in config and "keepalive 64;" in config
    unix = Nginx(tmp_path / "unix", mlflow_port=0, upstream_socket="/run/x/mlflow.sock").render().read_text()
    assert "server unix:/run/x/mlflow.sock;" in unix
    run = {"rps": 100.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "errors": 0, "requests": 500, "mb_per_s": 0.1}
    results = {
        "meta": {"date": "2026-11-23T00:00:00", "command": "python -m bench.run", "machine": {}},
        "workloads": {"api": {"runs/get": {"1": {s: [run] for s in ("mlflow", "nginx", "front")}}}},
        "memory_idle": {"front_mib": 60.0, "tree_mib": 500.0, "processes": 3},
    }
    table = render(results)
    assert "| runs/get | 1 |" in table and "Front idle < 60 MiB" in table


def test_report_renders_a_table_per_worker_count():
    run = {"rps": 100.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "errors": 0, "requests": 500, "mb_per_s": 0.1, "proxy_cpu_ms": 0.2}
    api = {"experiments/get": {"1": {s: [run] for s in ("mlflow", "nginx", "front")}}}
    results = {
        "meta": {"date": "2026-11-28T00:00:00", "command": "python -m bench.run --mlflow-workers 1,2", "machine": {}, "front_child": "unix"},
        "workloads": {},
        "by_workers": {w: {"workloads": {"api": api}, "memory_idle": {"front_mib": 50.0, "tree_mib": 500.0, "processes": 3}} for w in ("1", "2")},
    }
    table = render(results)
    assert "### API calls, MLflow with 1 worker (wrk, 1 thread)" in table and "### API calls, MLflow with 2 workers (wrk, 1 thread)" in table
    assert "[1 MLflow worker] req/s ≥ 0.95 × MLflow alone: experiments/get" in table
    assert "[2 MLflow workers] front/MLflow req/s within 0.03 of nginx/MLflow: experiments/get" in table
    assert "Front CPU per request ≤ 0.25 ms: experiments/get, c=1 | 0.20 ms | met" in table
