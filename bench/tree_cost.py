"""MLflow's own process tree: `mlflow server` (its CLI process, then uvicorn) against MLflow's ASGI
app under uvicorn in one process (`python -m launcher.inside_mlflow.serve_mlflow`), both as the launcher starts them.

For each way and run: seconds from launch to MLflow's `/health` answering 200, CPU-seconds the tree
used until then, the number of processes, and the tree's idle RSS and PSS (summed over its
processes) a few seconds after it is ready. Each run starts on a fresh data directory (so store
creation and migrations are in the time), then once more on the same directory (an existing
database: a restart). Runs alternate between the two ways, so that load from elsewhere falls on both.

    uv run python -m bench.tree_cost [--runs 3] [--settle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.servers import stop_group
from launcher.inside_mlflow.serve_mlflow import mlflow_server_command, parse_arguments
from launcher.mlflow_process import mlflow_command, mlflow_environment
from launcher.settings import Settings


def commands(data_dir: Path, socket_path: str) -> dict[str, list[str]]:
    """Both ways, from the launcher's own command for these settings (one worker, no job runner)."""
    direct = mlflow_command(Settings(data_dir=data_dir), None, socket_path)
    assert direct[1:3] == ["-m", "launcher.inside_mlflow.serve_mlflow"], direct
    return {"cli": mlflow_server_command(parse_arguments(direct[3:])), "direct": direct}


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def memory_mib(processes: list[psutil.Process]) -> tuple[float, float]:
    rss = pss = 0
    for proc in processes:
        try:
            info = proc.memory_full_info()
            rss += info.rss
            pss += info.pss
        except psutil.NoSuchProcess:
            pass
    return rss / 2**20, pss / 2**20


def one_start(command: list[str], env: dict[str, str], socket_path: str, log: Path, settle: float) -> dict:
    Path(socket_path).unlink(missing_ok=True)
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"exited with {process.returncode}; see {log}")
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"not ready after 300 s; see {log}")
                try:
                    if client.get("http://localhost/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            ready = time.monotonic() - started
            processes = tree(process.pid)
            cpu = cpu_seconds(processes)
            time.sleep(settle)
            processes = tree(process.pid)
            rss, pss = memory_mib(processes)
            return {"seconds_to_health": round(ready, 2), "cpu_seconds": round(cpu, 1), "processes": len(processes), "idle_rss_mib": round(rss), "idle_pss_mib": round(pss)}
    finally:
        stop_group(process, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between ready and reading memory")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"cli": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="tree-cost-") as scratch:
        for run in range(args.runs):
            for way in ("cli", "direct") if run % 2 == 0 else ("direct", "cli"):
                data_dir = Path(scratch) / f"{way}-{run}"
                socket_path = str(Path(scratch) / f"{way}.sock")
                command = commands(data_dir, socket_path)[way]
                # The stores reach MLflow in its environment (never argv): each run its own data dir.
                env = {**mlflow_environment(Settings(data_dir=data_dir)), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
                load = os.getloadavg()[0]
                fresh = one_start(command, env, socket_path, Path(scratch) / f"{way}.log", args.settle)
                again = one_start(command, env, socket_path, Path(scratch) / f"{way}.log", args.settle)
                row = {"run": run, "load_1m": round(load, 2), "fresh": fresh, "existing_db": again}
                results[way].append(row)
                print(way, json.dumps(row), flush=True)
    for way, rows in results.items():
        for start in ("fresh", "existing_db"):
            summary = {key: statistics.median(row[start][key] for row in rows) for key in rows[0][start]}
            print(f"median {way} {start}: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
