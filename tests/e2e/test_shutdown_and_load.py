"""Graceful shutdown with a transfer in flight, clients that vanish mid-transfer, many at once."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
import uuid

import httpx
import psutil
import pytest

from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e
MIB = 1 << 20


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_sigterm_lets_a_slow_upload_finish_then_stops_everything(tmp_path):
    app = AppProcess(tmp_path, "--drain-seconds", "8").start().wait_ready()
    size = 24 * MIB
    outcome: dict = {}

    def slow_body():
        for _ in range(size // MIB):
            yield b"x" * MIB
            time.sleep(0.2)  # ~5 MiB/s: the upload takes ~5 s

    def upload():
        try:
            outcome["response"] = httpx.put(
                f"{app.url}/api/2.0/mlflow-artifacts/artifacts/drain/blob.bin",
                content=slow_body(),
                headers={"Content-Length": str(size)},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    try:
        tree = [p.pid for p in app.tree()]
        uploader = threading.Thread(target=upload)
        uploader.start()
        time.sleep(1.0)  # the upload is under way
        seconds = app.stop(signal.SIGTERM, timeout=20)
        uploader.join(30)
    finally:
        app.kill_leftovers()

    assert seconds < 15
    assert alive(tree) == []
    # Within the drain time the upload completes; had it not, it would have failed cleanly.
    assert "response" in outcome, outcome.get("error")
    assert outcome["response"].status_code == 200
    stored = list((tmp_path / "data" / "artifacts").rglob("blob.bin"))
    assert [p.stat().st_size for p in stored] == [size]


def test_clients_that_vanish_mid_transfer_leak_nothing(app):
    path = f"/api/2.0/mlflow-artifacts/artifacts/vanish-{uuid.uuid4().hex[:8]}/blob.bin"
    assert httpx.put(app.url + path, content=b"v" * (64 * MIB), timeout=60).status_code == 200
    for _ in range(3):  # warm the front's connection pool to MLflow
        httpx.get(app.url + "/api/2.0/mlflow/experiments/search?max_results=1")
    time.sleep(0.5)
    baseline_connections = app.upstream_connections()
    baseline_memory = psutil.Process(app.process.pid).memory_info().rss

    for _ in range(5):
        with httpx.stream("GET", app.url + path, timeout=30) as download:
            next(download.iter_raw(MIB))  # read a little, then hang up
        with socket.create_connection(("127.0.0.1", app.port)) as raw:
            raw.sendall(f"PUT {path}.part HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {64 * MIB}\r\n\r\n".encode() + b"u" * (8 * MIB))  # a quarter of the promised body, then hang up

    def settled() -> bool:
        return app.upstream_connections() <= baseline_connections

    app.wait_until(settled, 15, "upstream connections to return to their baseline")
    growth = (psutil.Process(app.process.pid).memory_info().rss - baseline_memory) / MIB
    assert growth < 32, f"front grew {growth:.0f} MiB"
    assert app.health().status_code == 200
    assert httpx.get(app.url + path, timeout=60).content == b"v" * (64 * MIB)  # still served whole
    httpx.delete(app.url + path)


def test_256_concurrent_connections_lose_nothing(app):
    run_id = httpx.post(f"{app.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
    connections = 256

    async def one_client(step: int, client: httpx.AsyncClient) -> list[int]:
        write = await client.post(
            "/api/2.0/mlflow/runs/log-metric",
            json={"run_id": run_id, "key": "c", "value": step, "timestamp": 0, "step": step},
        )
        read = await client.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})
        asset = await client.get("/", headers={"Accept-Encoding": "br"})
        return [write.status_code, read.status_code, asset.status_code]

    async def all_at_once() -> list[list[int]]:
        # One connection per simulated user, all open at the same time.
        clients = [httpx.AsyncClient(base_url=app.url, timeout=120) for _ in range(connections)]
        try:
            return await asyncio.gather(*(one_client(i, c) for i, c in enumerate(clients)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    statuses = asyncio.run(all_at_once())
    assert all(s == [200, 200, 200] for s in statuses), [s for s in statuses if s != [200, 200, 200]][:5]
    history = httpx.get(f"{app.url}/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": "c", "max_results": 10000}).json()["metrics"]
    assert sorted(int(m["step"]) for m in history) == list(range(connections))


def test_an_upload_cut_by_shutdown_gets_an_mlflow_shaped_503_and_a_log_line(tmp_path):
    app = AppProcess(tmp_path, "--drain-seconds", "1").start().wait_ready()
    path = "/api/2.0/mlflow-artifacts/artifacts/cut/blob.bin"
    try:
        with socket.create_connection(("127.0.0.1", app.port), timeout=20) as raw:
            raw.sendall(
                f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: cut-by-shutdown\r\nContent-Length: {64 * MIB}\r\n\r\n".encode() + b"c" * MIB
            )  # a sixty-fourth of the body, then nothing more: still uploading at SIGTERM
            time.sleep(0.5)
            app.process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        app.process.wait(20)
    finally:
        app.kill_leftovers()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer[:300]
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "PUT /api/2.0/mlflow-artifacts/artifacts/cut/blob.bin cut by shutdown" in app.log_text()
    assert "Internal Server Error" not in answer.decode("latin-1")
