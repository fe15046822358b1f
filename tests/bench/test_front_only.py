"""bench/front_only.py works end to end, briefly: fake upstream, fronts, (nginx if installed), a load
loop in Python (wrk is not needed), the results file and its tables. No timing is asserted."""

from __future__ import annotations

import json
import os
import time

import httpx

from bench import front_only
from bench.fake_upstream import BIG_BYTES, SMALL_BYTES
from bench.front_only import FakeUpstreamServer
from bench.report import render
from bench.servers import stat_cpu_seconds


def test_fake_upstream_answers_small_big_and_posts_on_kept_alive_connections(tmp_path):
    upstream = FakeUpstreamServer(tmp_path / "upstream").start()
    try:
        with httpx.Client(base_url=upstream.url) as client:
            for _ in range(3):  # one connection, several requests
                assert len(client.get("/api/2.0/mlflow/experiments/get?experiment_id=1").content) == SMALL_BYTES
                assert len(client.get("/big").content) == BIG_BYTES
                posted = client.post("/api/2.0/mlflow/runs/log-metric", content=b"x" * 100_000)
                assert posted.status_code == 200 and len(posted.content) == SMALL_BYTES
                json.loads(posted.content)
        with httpx.Client(transport=httpx.HTTPTransport(uds=upstream.unix_socket)) as client:
            assert len(client.get("http://localhost/big").content) == BIG_BYTES
    finally:
        upstream.stop()


def test_stat_cpu_seconds_counts_this_process():
    before = stat_cpu_seconds([os.getpid()])
    deadline = time.monotonic() + 5
    while stat_cpu_seconds([os.getpid()]) == before and time.monotonic() < deadline:
        sum(range(10_000))
    assert stat_cpu_seconds([os.getpid()]) > before
    assert stat_cpu_seconds([2**22 + 1]) == 0  # no such process


def test_front_only_measures_the_front_and_writes_its_results(tmp_path):
    out = tmp_path / "front-only.json"
    written = front_only.main(["--load", "python", "--seconds", "0.2", "--concurrency", "1,2", "--out", str(out)])
    assert written == out
    results = json.loads(out.read_text())
    assert results["setups"]["upstream"] == results["setups"]["front"] == "measured"
    front = [r for r in results["runs"] if r["setup"] == "front"]
    assert {(r["call"], r["c"]) for r in front} == {(call.name, c) for call in front_only.CALLS for c in (1, 2)}
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["proxy_cpu_us"] is not None for r in front)
    assert results["meta"]["machine"]["git"] and len(results["meta"]["load_before"]) == 3
    table = render(results)  # bench.report knows this kind of file
    assert "| front | GET small | 1 |" in table and "| upstream | GET big | 2 |" in table
