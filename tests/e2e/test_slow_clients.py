"""Clients too slow to send their request body or to read their answer are cut off by the front, so
they cannot hold the front's connections to MLflow (issue 11: 512 half-sent bodies took them all)."""

from __future__ import annotations

import json
import selectors
import socket
import time
import uuid

import httpx
import psutil
import pytest

from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e
MIB = 1 << 20
IDLE_SECONDS = 2
HALF_SENT_CLIENTS = 515  # more than the front's 512 connections to MLflow
# From three loopback addresses: the front lets one address hold at most half of those connections.
SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def strict_app(tmp_path_factory) -> AppProcess:
    """The real app with a client idle limit of 2 s, and a short upstream timeout so that a request
    left waiting for a connection to MLflow fails in seconds rather than a minute."""
    env = {"MLFLOW_APP_CLIENT_IDLE_TIMEOUT": str(IDLE_SECONDS), "MLFLOW_APP_CLIENT_MIN_RATE": "1024"}
    running = AppProcess(tmp_path_factory.mktemp("slow-clients-app"), "--upstream-timeout", "10", env=env).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def half_sent_upload(app: AppProcess, name: str, source: str) -> socket.socket:
    """A PUT of an artifact that promises 1000 bytes and sends 10, then nothing."""
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=30, source_address=(source, 0))
    sock.sendall(f"PUT /api/2.0/mlflow-artifacts/artifacts/slow/{name}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n".encode() + b"0123456789")
    return sock


def answers(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """Read every socket until it closes (or `timeout` runs out); what each received."""
    received = {sock: b"" for sock in socks}
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    open_ = len(socks)
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
            try:
                chunk = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[key.fileobj] += chunk
            else:
                selector.unregister(key.fileobj)
                open_ -= 1
    selector.close()
    return received


def test_half_sent_bodies_get_408_and_free_the_connections_to_mlflow(strict_app):
    assert httpx.get(strict_app.url + SEARCH, timeout=10).status_code == 200
    started = time.monotonic()
    socks = [half_sent_upload(strict_app, f"{uuid.uuid4().hex[:8]}-{i}", SOURCES[i % 3]) for i in range(HALF_SENT_CLIENTS)]
    try:
        time.sleep(0.5)  # every upload is now waiting on MLflow with one of the front's connections
        # Meanwhile: served once the stalled uploads are cut, within the upstream timeout.
        meanwhile = httpx.get(strict_app.url + SEARCH, timeout=30)
        received = answers(socks, timeout=IDLE_SECONDS + 10)
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()

    assert meanwhile.status_code == 200, meanwhile.text
    statuses = {}
    for raw in received.values():
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        statuses[status] = statuses.get(status, 0) + 1
        if status == 408:
            assert b"connection: close" in head.lower()
            assert json.loads(body)["error_code"] == "BAD_REQUEST"
    assert statuses == {408: HALF_SENT_CLIENTS}, statuses
    assert elapsed < IDLE_SECONDS + 10
    assert httpx.get(strict_app.url + SEARCH, timeout=10).status_code == 200  # afterwards too
    log = strict_app.log_text()
    assert "cut off a slow client" in log and "PUT /api/2.0/mlflow-artifacts/artifacts/slow/" in log


def front_holds(app: AppProcess, local_port: int) -> bool:
    """Whether the front still has a connection from the client at 127.0.0.1:`local_port`."""
    connections = psutil.Process(app.process.pid).net_connections(kind="tcp")
    return any(c.raddr and c.raddr.port == local_port and c.status == psutil.CONN_ESTABLISHED for c in connections)


def test_a_client_that_stops_reading_an_artifact_is_cut_off(strict_app):
    size = 32 * MIB
    path = f"/api/2.0/mlflow-artifacts/artifacts/slow-reader-{uuid.uuid4().hex[:8]}/blob.bin"
    assert httpx.put(strict_app.url + path, content=b"r" * size, timeout=60).status_code == 200

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", strict_app.port))
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        local_port = sock.getsockname()[1]
        started = time.monotonic()
        strict_app.wait_until(lambda: front_holds(strict_app, local_port), 5, "the front to accept the reader")
        strict_app.wait_until(lambda: not front_holds(strict_app, local_port), IDLE_SECONDS + 8, "the front to cut the reader off")
        cut_after = time.monotonic() - started
        # Reading now gets what was already on its way, then the end: never the whole artifact.
        received = 0
        try:
            while chunk := sock.recv(MIB):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert IDLE_SECONDS <= cut_after < IDLE_SECONDS + 8
    assert received < size
    assert httpx.get(strict_app.url + SEARCH, timeout=10).status_code == 200
    assert httpx.get(strict_app.url + path, timeout=60).content == b"r" * size  # a reader that reads is served whole
    assert "cut off a slow client" in strict_app.log_text()
