"""A bounded soak: mixed traffic against a running mlflow-app for a fixed time.

    uv run python -m bench.soak --url http://127.0.0.1:8000 --seconds 600 --concurrency 16

Each worker cycles through API writes and reads, UI assets (with revalidation) and an artifact
upload and download that is checked byte for byte. The report gives requests, errors (which must
be 0), p50/p99 latency and the front's resident memory after warm-up and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
from dataclasses import dataclass, field

import httpx
import psutil

ARTIFACT = os.urandom(256 * 1024)


@dataclass
class SoakReport:
    seconds: float
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    memory_start_mib: float = 0.0
    memory_end_mib: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.0f} s ({self.requests / self.seconds:.0f}/s), "
            f"{len(self.errors)} errors, p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms, "
            f"front memory {self.memory_start_mib:.0f} -> {self.memory_end_mib:.0f} MiB"
        )


def front_process(url: str) -> psutil.Process:
    """The process listening on the URL's port: the front."""
    port = httpx.URL(url).port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise SystemExit(f"no process listens on port {port}")


class Worker:
    def __init__(self, client: httpx.AsyncClient, report: SoakReport, number: int, run_id: str, asset: str):
        self.client, self.report, self.number, self.run_id, self.asset = client, report, number, run_id, asset
        self.step = 0
        self.etag: str | None = None

    async def call(self, method: str, path: str, ok=(200,), **kwargs) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.report.errors.append(f"{method} {path}: {type(exc).__name__}")
            return None
        self.report.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.report.requests += 1
        if response.status_code not in ok:
            self.report.errors.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
            return None
        return response

    async def cycle(self) -> None:
        self.step += 1
        now = int(time.time() * 1000)
        metrics = [{"key": f"m{i}", "value": self.step, "timestamp": now, "step": self.step} for i in range(10)]
        await self.call("POST", "/api/2.0/mlflow/runs/log-batch", json={"run_id": self.run_id, "metrics": metrics})
        await self.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": self.run_id})
        await self.call("POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 10})
        headers = {"Accept-Encoding": "br, gzip"} | ({"If-None-Match": self.etag} if self.etag else {})
        asset = await self.call("GET", self.asset, ok=(200, 304), headers=headers)
        if asset is not None:
            self.etag = asset.headers.get("etag")
        await self.call("GET", "/", headers={"Accept-Encoding": "gzip"})
        path = f"/api/2.0/mlflow-artifacts/artifacts/soak/{self.number}/{self.step % 5}.bin"
        await self.call("PUT", path, content=ARTIFACT)
        download = await self.call("GET", path)
        if download is not None and download.content != ARTIFACT:
            self.report.errors.append(f"GET {path}: content differs from what was uploaded")


async def soak(url: str, seconds: float, concurrency: int, warmup_seconds: float = 3.0) -> SoakReport:
    front = front_process(url)
    report = SoakReport(seconds=seconds)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        index = (await client.get("/")).text
        asset = "/" + re.search(r'src="(static-files/[^"]+\.js)"', index).group(1)
        experiment = await client.post("/api/2.0/mlflow/experiments/create", json={"name": f"soak-{time.time_ns()}"})
        experiment_id = experiment.json()["experiment_id"]
        run = await client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id})
        run_id = run.json()["run"]["info"]["run_id"]
        workers = [Worker(client, report, n, run_id, asset) for n in range(concurrency)]

        async def loop(worker: Worker, until: float) -> None:
            while time.monotonic() < until:
                await worker.cycle()

        warm_until = time.monotonic() + warmup_seconds
        await asyncio.gather(*(loop(w, warm_until) for w in workers))
        report.requests, report.latencies_ms = 0, []
        report.memory_start_mib = front.memory_info().rss / 2**20
        until = time.monotonic() + seconds
        await asyncio.gather(*(loop(w, until) for w in workers))
        report.memory_end_mib = front.memory_info().rss / 2**20
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    report = asyncio.run(soak(args.url, args.seconds, args.concurrency))
    print(report.summary())
    for error in report.errors[:20]:
        print("  error:", error)
    raise SystemExit(1 if report.errors else 0)


if __name__ == "__main__":
    main()
