"""MLflow on a Unix socket (--mlflow-unix-socket): no TCP port at all, a socket only we can open.

The app is started with the switch given explicitly, so these tests hold whichever way its default
(launcher/settings.py, MLFLOW_UNIX_SOCKET_DEFAULT) points.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from launcher.mlflow_process import MAX_SOCKET_PATH_BYTES
from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app_on_socket(tmp_path_factory) -> AppProcess:
    running = AppProcess(tmp_path_factory.mktemp("socket-app"), "--mlflow-unix-socket").start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def mlflow_processes(app: AppProcess) -> list[psutil.Process]:
    return [psutil.Process(pid) for pid in app.mlflow_pids()]


def tcp_listeners(app: AppProcess) -> list[tuple[int, object]]:
    """(pid, address) of every TCP socket (IPv4 or IPv6) an MLflow process listens on."""
    return [(proc.pid, c.laddr) for proc in mlflow_processes(app) for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]


def unix_socket_paths(app: AppProcess) -> set[str]:
    return {c.laddr for proc in mlflow_processes(app) for c in proc.net_connections(kind="unix") if c.laddr}


def mlflow_socket(app: AppProcess) -> Path:
    paths = [Path(p) for p in unix_socket_paths(app) if p.endswith("/mlflow.sock")]
    assert len(paths) == 1, f"MLflow should hold exactly one socket named mlflow.sock: {unix_socket_paths(app)}"
    return paths[0]


def test_mlflow_listens_on_no_tcp_port_and_its_socket_is_ours_alone(app_on_socket):
    assert app_on_socket.health().status_code == 200
    assert app_on_socket.mlflow_pids(), "MLflow should run as a child of the front"
    assert tcp_listeners(app_on_socket) == []
    socket_path = mlflow_socket(app_on_socket)
    assert socket_path.is_socket()
    assert len(os.fsencode(socket_path)) <= MAX_SOCKET_PATH_BYTES
    directory = socket_path.parent.stat()
    assert directory.st_mode & 0o777 == 0o700, oct(directory.st_mode)
    assert directory.st_uid == os.getuid() == app_on_socket.tree()[0].uids().real


def test_requests_reach_mlflow_through_the_front(app_on_socket):
    created = httpx.post(f"{app_on_socket.url}/api/2.0/mlflow/experiments/create", json={"name": "over-the-socket"}, timeout=30)
    assert created.status_code == 200, created.text
    got = httpx.get(f"{app_on_socket.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": created.json()["experiment_id"]}, timeout=30)
    assert got.json()["experiment"]["name"] == "over-the-socket"


def test_a_killed_mlflow_comes_back_on_the_same_socket(app_on_socket):
    """The killed run leaves its socket file behind; the next one must start anyway."""
    before = mlflow_socket(app_on_socket)
    psutil.Process(app_on_socket.mlflow_pids()[0]).send_signal(signal.SIGKILL)
    app_on_socket.wait_until(lambda: app_on_socket.health().status_code == 503, 30, "/health to report MLflow down")
    app_on_socket.wait_ready()
    assert app_on_socket.health().json()["mlflow"]["restarts"] == 1
    assert mlflow_socket(app_on_socket) == before
    assert tcp_listeners(app_on_socket) == []
