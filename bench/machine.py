"""What a result was measured on: the machine, the versions, the commit, the load average."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

from bench.servers import nginx_version, wrk_version

REPO = Path(__file__).resolve().parent.parent
# The front's code: edits here not yet committed change what is measured (the JSON says so).
FRONT_PATHS = ("proxy", "launcher")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout


def uncommitted_front_files() -> list[str]:
    """Files of the front changed in the working tree since the commit: measured, but not in it."""
    return [line[3:] for line in git("status", "--porcelain", "--", *FRONT_PATHS).splitlines() if line[3:]]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(packages: tuple[str, ...] = ("mlflow", "uvicorn", "starlette", "httpx")) -> dict:
    """CPU, cores, memory, kernel, Python, `packages`' versions, nginx, wrk and the git commit."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: package_version(name) for name in packages},
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        "git": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_front_files": uncommitted_front_files(),
    }
