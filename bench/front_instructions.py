"""Instructions the front spends per proxied call, counted by valgrind's callgrind.

    uv run python -m bench.front_instructions                          # this checkout, about 2 minutes
    uv run python -m bench.front_instructions --tree /tmp/old-checkout # another commit, same venv

Wall time and CPU time per request wander on a shared machine; instruction counts do not (the
same binary, inputs and environment give the same total whatever else runs). The front runs as
`bench.front_only --serve-front` runs it (uvloop, the request log, `front_server_config`) in
front of `bench.fake_upstream`, under callgrind, and a kept-alive client makes `--few` and then
`--many` calls of each kind in separate runs; the difference divided by the difference in calls
is what one call costs, start-up and shutdown left out. `--tree` runs the front from another
checkout (`git worktree add /tmp/old <commit>`) with this one's virtual environment, so two commits
are compared on the same interpreter and libraries. Needs Debian's valgrind.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.front_only import stand_in_ui
from tests.app_process import free_port

ROOT = Path(__file__).resolve().parent.parent
CALLS = {
    "GET small": ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=1", None),
    "POST small": ("POST", "/api/2.0/mlflow/runs/log-metric", b'{"run_id":"r","key":"k","value":1.0,"timestamp":1}' * 4),
}


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:g} s")


def make_calls(port: int, call: str, count: int) -> None:
    method, path, body = CALLS[call]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"} if body else {}
    for _ in range(count):
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{call}: the front answered {response.status}")
    connection.close()


def instructions_for(tree: Path, upstream_port: int, call: str, count: int, workdir: Path) -> int:
    """Total instructions of one front process that served `count` calls of `call`."""
    port = free_port()
    out = workdir / f"callgrind-{call.replace(' ', '-')}-{count}.out"
    env = {**os.environ, "PYTHONPATH": str(tree), "MLFLOW_APP_LOG_LEVEL": "info"}
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.front_only", "--serve-front", "--port", str(port),
        "--upstream-port", str(upstream_port), "--ui-dir", str(stand_in_ui(workdir / "ui")),
    ]  # fmt: skip
    with open(workdir / "front.log", "ab") as log:
        front = subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=300)
        make_calls(port, call, count)
    finally:
        front.send_signal(signal.SIGINT)
        front.wait(timeout=300)
    summary = re.search(rb"^summary:\s+(\d+)", out.read_bytes(), flags=re.MULTILINE)
    if summary is None:
        raise RuntimeError(f"no summary in {out}")
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose front is measured (default: this one)")
    parser.add_argument("--few", type=int, default=200, help="calls in the first run")
    parser.add_argument("--many", type=int, default=1200, help="calls in the second run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="front-instructions-") as scratch:
        workdir = Path(scratch)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.fake_upstream", "--port", str(upstream_port)], cwd=ROOT)
        try:
            time.sleep(1)
            for call in CALLS:
                few = instructions_for(args.tree.resolve(), upstream_port, call, args.few, workdir)
                many = instructions_for(args.tree.resolve(), upstream_port, call, args.many, workdir)
                print(f"{call}: {(many - few) / (args.many - args.few):,.0f} instructions per call ({args.tree})", flush=True)
        finally:
            upstream.terminate()
            upstream.wait()


if __name__ == "__main__":
    main()
