"""What the benchmark asks of each server: API calls, the UI's first load, artifact transfers.

Everything here talks HTTP to a base URL and knows nothing of which server is behind it, so the
same functions measure MLflow alone, nginx and our front (and the CI smoke test drives them
against one app).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.wrk import Call

API = "/api/2.0/mlflow"
BROWSER_ENCODING = "gzip, deflate, br"
SEARCH_RUNS = 20
BATCH_METRICS = 1000
STEP = b"@STEP@"


@dataclass(frozen=True)
class Fixtures:
    """The experiment and runs that the API calls read and write."""

    experiment_id: str
    run_id: str  # read by runs/get; stays small
    write_run_id: str  # written by log-metric and log-batch, so the reads do not grow with them


def create_fixtures(base_url: str) -> Fixtures:
    """An experiment with SEARCH_RUNS runs, each with some params, tags and metrics."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        experiment = client.post(f"{API}/experiments/create", json={"name": f"bench-{time.time_ns()}"})
        experiment.raise_for_status()
        experiment_id = experiment.json()["experiment_id"]
        run_id = ""
        for number in range(SEARCH_RUNS):
            run = client.post(f"{API}/runs/create", json={"experiment_id": experiment_id, "run_name": f"run-{number}"})
            run.raise_for_status()
            run_id = run.json()["run"]["info"]["run_id"]
            batch = {
                "run_id": run_id,
                "params": [{"key": f"p{i}", "value": str(i)} for i in range(10)],
                "tags": [{"key": f"t{i}", "value": str(i)} for i in range(5)],
                "metrics": [{"key": f"m{i}", "value": i / 10, "timestamp": 1, "step": 0} for i in range(10)],
            }
            client.post(f"{API}/runs/log-batch", json=batch).raise_for_status()
        writes = client.post(f"{API}/runs/create", json={"experiment_id": experiment_id, "run_name": "writes"})
        writes.raise_for_status()
    return Fixtures(experiment_id, run_id, writes.json()["run"]["info"]["run_id"])


def api_calls(fixtures: Fixtures) -> list[Call]:
    """The small API calls, reads then writes."""
    metric = {"run_id": fixtures.write_run_id, "key": "loss", "value": 0.5, "timestamp": 1_700_000_000_000, "step": 0}
    metric_body = json.dumps(metric).encode().replace(b'"step": 0', b'"step": ' + STEP)
    batch = {
        "run_id": fixtures.write_run_id,
        "metrics": [{"key": f"batch_{i}", "value": i * 0.001, "timestamp": 1_700_000_000_000, "step": 0} for i in range(BATCH_METRICS)],
    }
    batch_body = json.dumps(batch).encode().replace(b'"step": 0', b'"step": ' + STEP)
    search = {"experiment_ids": [fixtures.experiment_id], "max_results": SEARCH_RUNS, "filter": "attributes.run_name LIKE 'run-%'"}
    return [
        Call("experiments/get", "GET", f"{API}/experiments/get?experiment_id={fixtures.experiment_id}"),
        Call("runs/get", "GET", f"{API}/runs/get?run_id={fixtures.run_id}"),
        Call("runs/search", "POST", f"{API}/runs/search", body=json.dumps(search).encode()),
        Call("runs/log-metric", "POST", f"{API}/runs/log-metric", body=metric_body, vary=STEP),
        Call("runs/log-batch", "POST", f"{API}/runs/log-batch", body=batch_body, vary=STEP),
    ]


def drain(base_url: str, fixtures: Fixtures, timeout: float = 300, quick_s: float = 0.3) -> float:
    """Wait until MLflow answers a read quickly twice in a row: what a previous run left queued
    (writes go on after wrk hangs up) must not be timed as the next run. Returns the seconds waited."""
    started = time.monotonic()
    quick = 0
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        while quick < 2 and time.monotonic() - started < timeout:
            sent = time.monotonic()
            client.get(f"{API}/experiments/get", params={"experiment_id": fixtures.experiment_id})
            quick = quick + 1 if time.monotonic() - sent < quick_s else 0
            if quick < 2:
                time.sleep(0.2)
    return time.monotonic() - started


def check_calls(base_url: str, calls: list[Call]) -> None:
    """Each call once, with its body as wrk sends it: a setup error must not look like a slow server."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for call in calls:
            body = call.body.replace(call.vary, b"0") if call.body and call.vary else call.body
            response = client.request(call.method, call.path, content=body, headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise RuntimeError(f"{call.name} via {base_url}: {response.status_code} {response.text[:200]}")


# --- the UI's first load -------------------------------------------------------------------------

_REFERENCE = re.compile(r'(?:src|href)="(?:\./)?(static-files/[^"]+)"')


def index_references(index_html: str) -> list[str]:
    """The paths the index page itself loads (script, stylesheet, icon, manifest)."""
    return ["/" + path for path in dict.fromkeys(_REFERENCE.findall(index_html))]


@dataclass
class Cached:
    etag: str | None
    last_modified: str | None
    fresh: bool  # a browser reuses it without asking (immutable or max-age > 0, not no-cache)


def _fresh(cache_control: str) -> bool:
    directives = {d.strip().split("=")[0]: d.strip() for d in cache_control.lower().split(",") if d.strip()}
    if "no-cache" in directives or "no-store" in directives:
        return False
    if "immutable" in directives:
        return True
    max_age = directives.get("max-age", "max-age=0").partition("=")[2]
    return max_age.isdigit() and int(max_age) > 0


@dataclass
class PageLoad:
    """One load of the index and everything it references, as a browser with 6 connections would."""

    seconds: float = 0.0
    requests: int = 0
    wire_bytes: int = 0  # body bytes as sent (compressed when the server compressed)
    not_modified: int = 0
    cache: dict[str, Cached] = field(default_factory=dict)


def _fetch(client: httpx.Client, path: str, encoding: str, cache: dict[str, Cached], load: PageLoad) -> bytes:
    """GET `path` as a browser would (conditional when cached, nothing when fresh); the decoded body."""
    known = cache.get(path)
    if known and known.fresh:
        return b""
    headers = {"Accept-Encoding": encoding}
    if known and known.etag:
        headers["If-None-Match"] = known.etag
    if known and known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    with client.stream("GET", path, headers=headers) as response:
        body = b"".join(response.iter_bytes())  # decoded, as a browser decodes
        if response.status_code not in (200, 304):
            raise RuntimeError(f"GET {path}: {response.status_code}")
        load.requests += 1
        load.wire_bytes += response.num_bytes_downloaded  # as sent: compressed when the server compressed
    if response.status_code == 304:
        load.not_modified += 1
    else:
        headers = response.headers
        fresh = path != "/" and _fresh(headers.get("cache-control", ""))
        cache[path] = Cached(headers.get("etag"), headers.get("last-modified"), fresh)
    return body


def page_load(base_url: str, encoding: str = BROWSER_ENCODING, cache: dict[str, Cached] | None = None) -> PageLoad:
    """Load `/` and everything it references, 6 connections at a time like a browser.

    Without `cache`: a first visit. With the cache of an earlier load: a second visit, where each
    file is reused, revalidated (304) or fetched again as its response headers allowed.
    """
    load = PageLoad(cache=dict(cache or {}))
    limits = httpx.Limits(max_connections=6, max_keepalive_connections=6)
    with httpx.Client(base_url=base_url, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        index = _fetch(client, "/", encoding, load.cache, load)
        elapsed = time.perf_counter() - started
        if not index:  # 304: the browser has the page it had (not timed, not counted)
            index = client.get("/", headers={"Accept-Encoding": "identity"}).content
        references = index_references(index.decode("utf-8", "replace"))
        started = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda path: _fetch(client, path, encoding, load.cache, load), references))
        load.seconds = elapsed + (time.perf_counter() - started)
    return load


def raw_bytes_of(ui_dir: Path, index_html: str) -> int:
    """The uncompressed size of the index and its references on disk."""
    paths = [ui_dir / "index.html", *(ui_dir / p.removeprefix("/static-files/") for p in index_references(index_html))]
    return sum(p.stat().st_size for p in paths)


def largest_js(ui_dir: Path) -> str:
    """URL path of the largest JavaScript file in the UI build."""
    biggest = max(ui_dir.rglob("*.js"), key=lambda p: p.stat().st_size)
    return "/static-files/" + biggest.relative_to(ui_dir).as_posix()


# --- artifacts ------------------------------------------------------------------------------------


def make_blob(path: Path, mib: int) -> Path:
    """`mib` MiB of incompressible bytes, written once and reused."""
    if not path.exists() or path.stat().st_size != mib * 2**20:
        chunk = bytes(range(256)) * 4096  # 1 MiB, rotated per MiB so no two are equal
        with path.open("wb") as f:
            for _ in range(mib):
                f.write(os.urandom(2**20) if mib <= 64 else chunk)
                chunk = chunk[1:] + chunk[:1]
    return path


@dataclass
class Transfer:
    seconds: float
    bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


def _curl(arguments: list[str]) -> tuple[int, float, int]:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}", *arguments],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"curl failed: {out.stderr.strip()}")
    code, seconds, up, down = out.stdout.split()
    return int(code), float(seconds), int(float(up)) + int(float(down))


def upload(base_url: str, artifact_path: str, blob: Path) -> Transfer:
    """PUT `blob` to the mlflow-artifacts API with curl (Content-Length known, as the mlflow client sends)."""
    code, seconds, size = _curl(["-T", str(blob), f"{base_url}{API}-artifacts/artifacts/{artifact_path}"])
    if code != 200:
        raise RuntimeError(f"upload to {base_url}: {code}")
    return Transfer(seconds, size)


def download(base_url: str, artifact_path: str, expected: int) -> Transfer:
    code, seconds, size = _curl([f"{base_url}{API}-artifacts/artifacts/{artifact_path}"])
    if code != 200 or size != expected:
        raise RuntimeError(f"download from {base_url}: {code}, {size} of {expected} bytes")
    return Transfer(seconds, size)


def delete_artifact(base_url: str, artifact_path: str) -> None:
    httpx.delete(f"{base_url}{API}-artifacts/artifacts/{artifact_path}", timeout=120)
