"""Runs the real `mlflow-app serve` as a separate process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

APP_COMMAND = [str(Path(sys.executable).parent / "mlflow-app"), "serve"]
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`mlflow-app serve` on a free port with its own data dir; output captured to a file."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.args = ["--port", str(self.port), "--data-dir", str(workdir / "data"), *args]
        self.env = {**os.environ, **QUIET_ENV, **(env or {})}
        self.log_path = workdir / "app.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*APP_COMMAND, *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=5)
        except httpx.TransportError:
            return None

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"mlflow-app exited ({self.process.returncode}) while waiting for {what}:\n{self.log_text()[-3000:]}")
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_text()[-3000:]}")

    def wait_ready(self, timeout: float = 240) -> AppProcess:
        self.wait_until(lambda: (r := self.health()) is not None and r.status_code == 200, timeout, "/health 200")
        return self

    def tree(self) -> list[psutil.Process]:
        """The front and every process below it (MLflow, its uvicorn workers, ...)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def mlflow_pids(self) -> list[int]:
        return [p.pid for p in self.tree()[1:]]

    def mlflow_listening(self) -> tuple[set[int], set[str]]:
        """The TCP ports and Unix socket paths MLflow's processes (not the front) listen on."""
        ports: set[int] = set()
        sockets: set[str] = set()
        for pid in self.mlflow_pids():
            try:
                connections = psutil.Process(pid).net_connections(kind="all")
            except psutil.NoSuchProcess:
                continue
            for connection in connections:
                if connection.family == socket.AF_UNIX and connection.laddr:
                    sockets.add(connection.laddr)
                elif connection.status == psutil.CONN_LISTEN:
                    ports.add(connection.laddr.port)
        return ports, sockets

    def mlflow_client(self, **options) -> httpx.Client:
        """An HTTP client that reaches MLflow directly, around the front (on its socket or port)."""
        ports, sockets = self.mlflow_listening()
        if sockets:
            return httpx.Client(base_url="http://localhost", transport=httpx.HTTPTransport(uds=min(sockets)), **options)
        if ports:
            return httpx.Client(base_url=f"http://127.0.0.1:{min(ports)}", **options)
        raise AssertionError("MLflow is not listening")

    def upstream_connections(self) -> int:
        """Connections the front holds open to MLflow (its pool)."""
        ports, sockets = self.mlflow_listening()
        front = psutil.Process(self.process.pid)
        if sockets:
            # A client's end of a Unix socket has no path of its own: count the front's
            # connected Unix sockets (its event loop's own pair is in the baseline too).
            return sum(1 for c in front.net_connections(kind="unix") if c.status == psutil.CONN_NONE or not c.laddr)
        return sum(1 for c in front.net_connections(kind="tcp") if c.raddr and c.raddr.port in ports)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> float:
        """Send `sig`, wait for the front to exit; returns the seconds it took."""
        if not self.process or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        finally:
            elapsed = time.monotonic() - started
            self.kill_leftovers()
        return elapsed

    def kill_leftovers(self) -> None:
        """Last resort for a failed test: nothing of ours may outlive it."""
        if self.process:
            for proc in self.tree():
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def resident_bytes(processes) -> int:
    """The summed resident memory of `processes` (psutil), skipping any that has exited."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total
