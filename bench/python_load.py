"""A load loop in Python for when `wrk` is absent (CI): the same shape of run, slower and noisier.

`run_python_load` takes the arguments of `bench.wrk.run_wrk` and returns its `WrkResult`:
`connections` kept-alive connections, each sending the call again as soon as the answer is in,
for `seconds`. It is a stand-in so the harness always runs, not a load generator to quote.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import urlsplit

import httptools

from bench.wrk import Call, WrkResult


class _Answer:
    """httptools callbacks for one response at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.bytes = 0

    def on_body(self, body: bytes) -> None:
        self.bytes += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


def request_bytes(host: str, call: Call) -> bytes:
    body = call.body or b""
    if call.vary is not None:
        body = body.replace(call.vary, b"0")
    headers = [("Host", host), ("Content-Type", "application/json"), *call.headers]
    if call.body is not None:
        headers.append(("Content-Length", str(len(body))))
    head = f"{call.method} {call.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float], totals: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            answer = _Answer()
            sent = time.perf_counter()
            writer.write(request)
            while not answer.complete:
                data = await reader.read(65536)
                if not data:
                    totals["errors"] += 1
                    return
                answer.parser.feed_data(data)
            latencies.append(time.perf_counter() - sent)
            totals["bytes"] += answer.bytes
            if answer.parser.get_status_code() >= 400:
                totals["errors"] += 1
    except OSError:
        totals["errors"] += 1
    finally:
        writer.close()


async def _load(base_url: str, call: Call, connections: int, seconds: float) -> WrkResult:
    parts = urlsplit(base_url)
    request = request_bytes(parts.netloc, call)
    latencies: list[float] = []
    totals = {"bytes": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(parts.hostname, parts.port or 80, request, deadline, latencies, totals) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99 or [0.0] * 99
    return WrkResult(
        requests=len(latencies),
        seconds=elapsed,
        bytes=totals["bytes"],
        errors=totals["errors"],
        p50_ms=cuts[49] * 1000,
        p90_ms=cuts[89] * 1000,
        p99_ms=cuts[98] * 1000,
    )


def run_python_load(base_url: str, call: Call, connections: int, seconds: float, timeout_s: float = 30, step_base: int = 0) -> WrkResult:
    """`run_wrk`'s contract, in Python: `connections` keep-alive connections for `seconds`."""
    del timeout_s, step_base  # accepted so either runner can be passed around; a write's step stays 0
    return asyncio.run(_load(base_url, call, connections, seconds))
