"""The servers a benchmark compares: our front (with its MLflow child), MLflow alone, and nginx.

MLflow alone is started with exactly the command line and environment our launcher gives its
child (`launcher.mlflow_process.mlflow_command`), so every comparison is like with like.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jinja2
import psutil

from launcher.mlflow_process import mlflow_command, mlflow_environment
from launcher.settings import Settings

QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
APP_COMMAND = [str(Path(sys.executable).parent / "mlflow-app"), "serve"]
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.j2")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(url: str, timeout: float, process: subprocess.Popen | None = None, interval: float = 0.02) -> float:
    """Seconds until `url` answers 200, polling every `interval`; raises if the process exits first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}) before {url} answered")
        if answers(url, timeout=max(interval, 0.5)):
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def tree_of(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def stat_cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of `pids` so far, from /proc/<pid>/stat (a gone pid counts 0)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / CLOCK_TICKS


class PeakMemory:
    """Samples the resident memory of one process and of its whole tree in a thread, keeping peaks."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.front_peak_mib = self.tree_peak_mib = self.front_start_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.front_start_mib = rss_mib(tree_of(self.pid)[:1])
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = tree_of(self.pid)
            self.front_peak_mib = max(self.front_peak_mib, rss_mib(tree[:1]))
            self.tree_peak_mib = max(self.tree_peak_mib, rss_mib(tree))
            self._stop.wait(self.interval)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process, then SIGKILL to its whole session if it does not leave in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of its group (MLflow's workers)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@dataclass
class Front:
    """`mlflow-app serve` with its MLflow child on a known loopback port (`--mlflow-port`).

    With `mlflow_port=None` the launcher picks where its child listens (a Unix socket by default,
    once the launcher does so); the child is then not reachable from here, and `mlflow_url` raises.
    """

    workdir: Path
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    mlflow_port: int | None = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mlflow_url(self) -> str:
        if self.mlflow_port is None:
            raise ValueError("the front was started without --mlflow-port: its child has no known TCP port")
        return f"http://127.0.0.1:{self.mlflow_port}"

    def launch(self) -> subprocess.Popen:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--data-dir", str(self.workdir / "data")]
        if self.mlflow_port is not None:  # keeps the child on loopback TCP, where "MLflow alone" reaches it
            args += ["--mlflow-port", str(self.mlflow_port)]
        with open(self.workdir / "front.log", "ab") as log:
            self.process = subprocess.Popen(
                [*APP_COMMAND, *args, *self.extra_args],
                cwd=self.workdir,
                env={**os.environ, **QUIET_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.process

    def start(self, timeout: float = 300) -> Front:
        wait_for(f"{self.url}/health", timeout, self.launch())
        return self

    def stop(self) -> None:
        if self.process:
            stop_group(self.process)


@dataclass
class MlflowAlone:
    """`python -m mlflow server` with the same command line and environment as our child."""

    workdir: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    job_execution: bool = False
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, mlflow_defaults: bool = False) -> tuple[list[str], dict[str, str]]:
        settings = Settings(data_dir=self.workdir / "data", workers=self.workers, job_execution=self.job_execution)
        command = mlflow_command(settings, self.port)
        env = {**mlflow_environment(settings), **QUIET_ENV}
        if mlflow_defaults:  # `mlflow server` as installed: its own worker count and job runner
            index = command.index("--workers")
            del command[index : index + 2]
            env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)
        return command, env

    def launch(self, mlflow_defaults: bool = False) -> subprocess.Popen:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        command, env = self.command(mlflow_defaults)
        with open(self.workdir / "mlflow.log", "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self.process

    def stop(self) -> None:
        if self.process:
            stop_group(self.process)


@dataclass
class Nginx:
    """Debian's nginx proxying to an MLflow on `mlflow_port` (or on the Unix socket `upstream_socket`),
    configured from bench/nginx.conf.j2."""

    workdir: Path
    mlflow_port: int
    port: int = field(default_factory=free_port)
    upstream_socket: str | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream(self) -> str:
        return f"unix:{self.upstream_socket}" if self.upstream_socket else f"127.0.0.1:{self.mlflow_port}"

    def render(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        template = jinja2.Template(NGINX_TEMPLATE.read_text(), undefined=jinja2.StrictUndefined)
        config = self.workdir / "nginx.conf"
        config.write_text(template.render(workdir=self.workdir, port=self.port, upstream=self.upstream))
        return config

    def start(self, timeout: float = 10, ready_path: str = "/health") -> Nginx:
        binary = nginx_binary()
        config = self.render()
        with open(self.workdir / "stdout.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(config), "-p", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for(f"{self.url}{ready_path}", timeout, self.process)
        return self

    def stop(self) -> None:
        if self.process:
            stop_group(self.process, timeout=10)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_installed() -> bool:
    return Path(nginx_binary()).exists()


def nginx_version() -> str:
    try:
        out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True).stderr.strip()
    except OSError:
        return "absent"
    return out.rpartition("/")[2]


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    except OSError:
        return "absent"
    return (out.stdout + out.stderr).split()[1] if (out.stdout + out.stderr).split()[1:] else "?"
