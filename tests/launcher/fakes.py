"""Stand-ins for `mlflow server`: tiny Python children that start fast and behave as a test needs."""

from __future__ import annotations

import os
import sys
import time

import psutil

# With SPAWN_GRANDCHILD set, a fake first starts a grandchild that ignores SIGTERM (like a worker
# that does not stop) and prints "grandchild <pid>"; the grandchild shares the output pipe when the
# value is "inherit", else writes to /dev/null.
GRANDCHILD = r"""
import os, subprocess, sys
if os.environ.get("SPAWN_GRANDCHILD"):
    grandchild = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring SIGTERM', flush=True); time.sleep(120)"],
        **({} if os.environ.get("SPAWN_GRANDCHILD") == "inherit" else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}))
    print("grandchild", grandchild.pid, flush=True)
"""

# argv: port, seconds before listening, seconds /health answers 503 once listening. Prints a few
# lines like MLflow does. With EXIT_AFTER=<seconds> it exits with code 9 that long after it starts
# listening.
SERVER = (
    GRANDCHILD
    + r"""
import http.server, time
from tests.app_process import free_port
port, delay, unhealthy = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print("INFO fake mlflow starting on", port, flush=True)
print("", flush=True)
print("   WARNING trailing spaces   ", flush=True)
time.sleep(delay)
listening_since = time.monotonic()

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = self.path == "/health" and time.monotonic() - listening_since >= unhealthy
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK" if healthy else b"no")

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Health)
if os.environ.get("EXIT_AFTER"):  # a crash some time after becoming ready
    import threading
    threading.Timer(float(os.environ["EXIT_AFTER"]), lambda: (print("ERROR crashed", flush=True), os._exit(9))).start()
print("INFO listening", flush=True)
server.serve_forever()
"""
)

# argv: exit code, lines to print before exiting.
EXIT = (
    GRANDCHILD
    + r"""
for line in sys.argv[2:]:
    print(line, flush=True)
sys.exit(int(sys.argv[1]))
"""
)

SLEEP = "import time; print('INFO sleeping', flush=True); time.sleep(120)"


def server_command(port: int, delay: float = 0.0, unhealthy: float = 0.0) -> list[str]:
    return [sys.executable, "-c", SERVER, str(port), str(delay), str(unhealthy)]


def exit_command(code: int, *lines: str) -> list[str]:
    return [sys.executable, "-c", EXIT, str(code), *lines]


def sleep_command() -> list[str]:
    return [sys.executable, "-c", SLEEP]


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def is_gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.02)
    return is_gone(pid)
