"""`/metrics` through the real front: what it counts, what it times, and that its series stay bounded."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import FrontConfig, create_app
from proxy.assets import UiAssets
from proxy.exchange import Exchange
from proxy.observation.metrics import FrontMetrics
from proxy.observation.observer import RequestObserver
from proxy.observation.routes import MAX_TEMPLATES, OTHER, RouteLabels
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.proxy.conftest import SSE_GAP_SECONDS, run_front

ROOT = Path(__file__).resolve().parents[3]
RUNS_GET = "/api/2.0/mlflow/runs/get"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/{artifact_path}"


class Scrape:
    """One parsed scrape: sample values by name and labels."""

    def __init__(self, text: str):
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in self.families.values():
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        """The one sample of `name` with exactly these labels (0 if there is none yet)."""
        found = [v for sample_labels, v in self.samples.get(name, []) if sample_labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def label_values(self, label: str, prefix: str = "mlflow_app_") -> set[str]:
        return {labels[label] for name, samples in self.samples.items() if name.startswith(prefix) for labels, _ in samples if label in labels}

    def series_count(self, prefix: str = "mlflow_app_") -> int:
        return sum(len(samples) for name, samples in self.samples.items() if name.startswith(prefix))


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def settled_scrape(client: httpx.AsyncClient, total_requests: int) -> Scrape:
    """A scrape once `total_requests` (scrapes excluded) are recorded: the front records a request
    after its last byte is sent, so a client that has read it all can be a moment ahead."""
    deadline = asyncio.get_running_loop().time() + 3
    while True:
        metrics = await scrape(client)
        counted = sum(v for labels, v in metrics.samples["mlflow_app_requests_total"] if labels["route"] != "/metrics")
        if counted >= total_requests or asyncio.get_running_loop().time() > deadline:
            return metrics
        await asyncio.sleep(0.01)


@pytest.fixture
def metrics_front(start_front):
    """A front of its own, so that the counts are this test's alone."""
    return start_front()


@pytest.fixture
async def http(metrics_front):
    async with httpx.AsyncClient(base_url=metrics_front.url, timeout=10, trust_env=False) as client:
        yield client


async def test_requests_are_counted_by_method_route_and_status(http):
    for run_id in ("a1b2", "c3d4", "e5f6"):
        assert (await http.get(RUNS_GET, params={"run_id": run_id})).status_code == 200
    for _ in range(2):
        assert (await http.post(LOG_BATCH, content=b"{}")).status_code == 200
    assert (await http.get("/")).status_code == 200
    assert (await http.get("/static-files/static/js/missing.0123abcd.js")).status_code == 404
    assert (await http.request("PROPFIND", "/")).status_code == 405

    metrics = await settled_scrape(http, 8)
    assert metrics.value("mlflow_app_requests_total", method="GET", route=RUNS_GET, status="200") == 3
    assert metrics.value("mlflow_app_requests_total", method="POST", route=LOG_BATCH, status="200") == 2
    assert metrics.value("mlflow_app_requests_total", method="GET", route="/", status="200") == 1
    assert metrics.value("mlflow_app_requests_total", method="GET", route="/static-files/{asset}", status="404") == 1
    assert metrics.value("mlflow_app_requests_total", method="OTHER", route="/", status="405") == 1
    # Query strings and ids never reach a label.
    assert not any("run_id" in v or "a1b2" in v for v in metrics.label_values("route"))
    # Counters carry no *_created twin series.
    assert not any(name.endswith("_created") for name in metrics.samples)


async def test_latency_histograms_count_every_request_and_separate_waiting_on_mlflow(http):
    for _ in range(4):
        await http.get(RUNS_GET)
    await http.get("/")
    await http.get("/delayed", params={"seconds": "0.3"})  # MLflow slow to answer
    async with http.stream("GET", "/sse") as events:  # MLflow quick to answer, slow to finish
        async for _ in events.aiter_bytes():
            pass

    metrics = await settled_scrape(http, 7)
    total, upstream = "mlflow_app_request_duration_seconds", "mlflow_app_upstream_duration_seconds"
    assert metrics.value(f"{total}_count", route=RUNS_GET) == 4
    assert metrics.value(f"{total}_bucket", route=RUNS_GET, le="+Inf") == 4
    assert metrics.value(f"{total}_bucket", route=RUNS_GET, le="120.0") == 4
    assert metrics.value(f"{upstream}_count", route=RUNS_GET) == 4
    assert 0 < metrics.value(f"{upstream}_sum", route=RUNS_GET) <= metrics.value(f"{total}_sum", route=RUNS_GET)
    # The UI is the front's own: timed, never waiting on MLflow.
    assert metrics.value(f"{total}_count", route="/") == 1
    assert metrics.value(f"{upstream}_count", route="/") == 0
    # /delayed and /sse both fold into {other}: 0.3 s waiting for headers, ~0.6 s of streaming after.
    assert metrics.value(f"{upstream}_count", route="{other}") == 2
    assert 0.3 <= metrics.value(f"{upstream}_sum", route="{other}") < 0.3 + 2 * SSE_GAP_SECONDS
    assert metrics.value(f"{total}_sum", route="{other}") >= 0.3 + 2 * SSE_GAP_SECONDS
    for route in metrics.label_values("route"):
        assert metrics.value(f"{upstream}_sum", route=route) <= metrics.value(f"{total}_sum", route=route)


async def test_time_to_an_upstream_timeout_is_time_spent_waiting_on_mlflow(start_front):
    front = start_front(config=FrontConfig(upstream_timeout_seconds=0.3))
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as http:
        assert (await http.get("/slow")).status_code == 504
        metrics = await settled_scrape(http, 1)
    assert metrics.value("mlflow_app_requests_total", method="GET", route="{other}", status="504") == 1
    assert 0.3 <= metrics.value("mlflow_app_upstream_duration_seconds_sum", route="{other}") < 1


async def test_requests_in_flight_rise_and_return_to_zero(http):
    assert (await scrape(http)).value("mlflow_app_requests_in_flight") == 0  # the scrape itself is not counted
    await gauge_during_a_stream(http, "mlflow_app_requests_in_flight")


async def gauge_during_a_stream(http, gauge: str) -> None:
    """`gauge` is 1 while an event stream is under way, and back to 0 shortly after it ends."""
    async with http.stream("GET", "/sse") as events:
        chunks = events.aiter_bytes()
        await anext(chunks)  # the first event is out: the request is under way
        assert (await scrape(http)).value(gauge) == 1
        async for _ in chunks:
            pass
    deadline = asyncio.get_running_loop().time() + 2
    while (await scrape(http)).value(gauge) != 0:
        assert asyncio.get_running_loop().time() < deadline, f"{gauge} did not return to 0"
        await asyncio.sleep(0.02)


async def test_connections_to_mlflow_in_use_are_a_gauge(http):
    before = await scrape(http)
    assert before.value("mlflow_app_upstream_connections_limit") == 512
    assert before.value("mlflow_app_upstream_requests_waiting") == 0
    await gauge_during_a_stream(http, "mlflow_app_upstream_connections_in_use")


async def test_bytes_in_and_out_match_what_was_sent(http):
    bodies = [b"x" * 12_345, b"y" * 1, b""]
    received = 0
    for body in bodies:
        response = await http.post(LOG_BATCH, content=body)
        received += len(response.content)  # the fake echoes uncompressed JSON
    download = await http.get("/download", params={"mib": "3"})

    metrics = await settled_scrape(http, 4)
    assert metrics.value("mlflow_app_request_bytes_total", route=LOG_BATCH) == sum(map(len, bodies))
    assert metrics.value("mlflow_app_response_bytes_total", route=LOG_BATCH) == received
    assert metrics.value("mlflow_app_response_bytes_total", route="{other}") == len(download.content) == 3 * 1024 * 1024


async def test_mlflow_state_follows_the_upstream_state(metrics_front, http):
    state = metrics_front.state
    metrics = await scrape(http)
    assert metrics.value("mlflow_app_mlflow_up") == 1
    assert metrics.value("mlflow_app_mlflow_phase", phase="ready") == 1
    assert metrics.value("mlflow_app_mlflow_restarts_total") == 0

    state.mark(UpstreamPhase.RESTARTING)
    state.restarts = 2
    metrics = await scrape(http)
    assert metrics.value("mlflow_app_mlflow_up") == 0
    assert metrics.value("mlflow_app_mlflow_phase", phase="restarting") == 1
    assert metrics.value("mlflow_app_mlflow_phase", phase="ready") == 0
    assert sum(v for _, v in metrics.samples["mlflow_app_mlflow_phase"]) == 1
    assert metrics.value("mlflow_app_mlflow_restarts_total") == 2
    assert metrics.value("mlflow_app_mlflow_uptime_seconds") == 0

    state.mark_ready()
    await asyncio.sleep(0.2)
    metrics = await scrape(http)
    assert metrics.value("mlflow_app_mlflow_up") == 1
    assert 0.2 <= metrics.value("mlflow_app_mlflow_uptime_seconds") < 5


async def test_process_metrics_of_the_front_are_exported(http):
    metrics = await scrape(http)
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"):
        assert metrics.value(name) > 0, name
    assert "python_info" in metrics.samples
    assert "python_gc_collections_total" in metrics.samples


async def test_metrics_keep_the_host_check(metrics_front, http):
    refused = await http.get("/metrics", headers={"Host": "evil.example"})
    assert refused.status_code == 403
    metrics = await scrape(http)
    assert metrics.value("mlflow_app_requests_total", method="GET", route="/metrics", status="403") == 1


async def test_refused_requests_do_not_use_up_route_labels(metrics_front, http):
    for word in ("alpha", "beta", "gamma"):
        refused = await http.get(f"/api/2.0/mlflow/made-up/{word}", headers={"Host": "evil.example"})
        assert refused.status_code == 403
    assert (await http.get(RUNS_GET, headers={"Host": "evil.example"})).status_code == 403
    metrics = await settled_scrape(http, 4)
    assert metrics.value("mlflow_app_requests_total", method="GET", route="{other}", status="403") == 4
    assert metrics_front.app.metrics.route_label.in_use == RouteLabels().in_use


async def call(app, method: str, path: str, body: bytes = b"") -> int:
    """One request straight into an ASGI app, no sockets: the status it answers."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def test_distinct_artifact_paths_through_the_whole_app_share_one_route(ui_build, caplog):
    caplog.set_level("WARNING")  # no request log lines: this is about labels
    # MLflow still starting: every request is answered (503) by the front itself, without sockets.
    state = UpstreamState(base_url="http://127.0.0.1:9", phase=UpstreamPhase.STARTING)
    app = create_app(FrontConfig(), state, UiAssets(ui_build))
    for i in range(200):
        assert await call(app, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{i % 7}/{i:032x}/model/f{i}.pkl") == 503
    metrics = Scrape(app.metrics.exposition().decode())
    assert metrics.label_values("route") == {ARTIFACTS}
    assert metrics.value("mlflow_app_requests_total", method="GET", route=ARTIFACTS, status="503") == 200


async def test_paths_clients_make_up_never_reach_a_label(ui_build, caplog):
    caplog.set_level("WARNING")
    state = UpstreamState(base_url="http://127.0.0.1:9", phase=UpstreamPhase.STARTING)  # every answer the front's 503
    app = create_app(FrontConfig(), state, UiAssets(ui_build))
    secret = "secretvalueplacedinapath"
    assert await call(app, "GET", f"/api/2.0/mlflow/{secret}/x") == 503
    for i in range(MAX_TEMPLATES + 10):  # more than the cap: it must not be what holds them back
        assert await call(app, "GET", f"/ajax-api/3.0/mlflow/made-up-{i}/get") == 503
    assert await call(app, "GET", "/api/2.0/mlflow/experiments/search") == 503
    metrics = Scrape(app.metrics.exposition().decode())
    assert secret not in metrics.text
    assert metrics.label_values("route") == {OTHER, "/api/2.0/mlflow/experiments/search"}
    assert metrics.value("mlflow_app_requests_total", method="GET", route=OTHER, status="503") == MAX_TEMPLATES + 11


def test_ten_thousand_artifact_paths_make_a_handful_of_series():
    front_metrics = FrontMetrics(UpstreamState(base_url="http://127.0.0.1:9"))
    observer = RequestObserver(front_metrics)
    before = Scrape(front_metrics.exposition().decode()).series_count()
    for i in range(10_000):
        path = f"/api/2.0/mlflow-artifacts/artifacts/{i % 7}/{i:032x}/model/f{i}.pkl"
        scope = {"type": "http", "method": "PUT" if i % 2 else "GET", "path": path, "headers": [], "scheme": "http"}
        exchange = Exchange(scope)  # as an artifact store would answer it
        observer.started(exchange)
        exchange.status, exchange.bytes_in, exchange.bytes_out, exchange.upstream_seconds = 200, 3, 4, 0.001
        observer.finished(exchange)
    metrics = Scrape(front_metrics.exposition().decode())
    assert metrics.label_values("route") == {ARTIFACTS}
    assert metrics.value("mlflow_app_requests_total", method="GET", route=ARTIFACTS, status="200") == 5_000
    assert metrics.value("mlflow_app_upstream_duration_seconds_count", route=ARTIFACTS) == 10_000
    assert metrics.value("mlflow_app_request_bytes_total", route=ARTIFACTS) == 30_000
    # Two request counters (GET, PUT), two histograms (17 buckets, sum and count each), two byte counters.
    assert metrics.series_count() - before == 2 + 19 + 19 + 2


def metric_names_in(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in re.findall(r"\b((?:mlflow_app|process|python)_[a-z0-9_]+)\b", expression)}


@pytest.fixture(scope="module")
def busy_scrape(mlflow_server, ui_build) -> Scrape:
    """A scrape after traffic of every kind, so that every labelled series exists; one per module."""
    front = run_front(mlflow_server, ui_build)
    try:
        with httpx.Client(base_url=front.url, timeout=10, trust_env=False) as client:
            client.get(RUNS_GET)
            client.post(LOG_BATCH, content=b"{}")
            client.get("/")
            client.get("/api/2.0/mlflow/runs/does-not-exist-at-all")
            deadline = time.monotonic() + 3
            while True:  # requests are recorded once their last byte is out
                metrics = Scrape(client.get("/metrics").text)
                if len(metrics.samples["mlflow_app_requests_total"]) >= 4 or time.monotonic() > deadline:
                    return metrics
                time.sleep(0.01)
    finally:
        front.server.stop()


def test_alert_rules_use_only_exported_metrics(busy_scrape):
    rules = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
    [group] = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert len(alerts) >= 5
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
    names = metric_names_in([rule["expr"] for rule in alerts.values()])
    assert names and names <= set(busy_scrape.samples), names - set(busy_scrape.samples)


def test_grafana_dashboard_uses_only_exported_metrics(busy_scrape):
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 6
    expressions += [variable["query"] for variable in dashboard["templating"]["list"]]
    names = metric_names_in(expressions)
    assert names and names <= set(busy_scrape.samples), names - set(busy_scrape.samples)


def test_readme_documents_every_metric(busy_scrape):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Metrics") :]
    section = section[: section.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE))
    ours = {name for name in busy_scrape.families if name.startswith("mlflow_app_")}
    exported = {f"{name}_total" if busy_scrape.families[name].type == "counter" else name for name in ours}
    assert exported == documented


def test_mlflows_memory_and_replacements_are_exported():
    state = UpstreamState(base_url="http://127.0.0.1:9")
    state.memory_bytes = 123456789
    state.replacements["reload"] = 2
    state.replacing = "memory"
    text = FrontMetrics(state).exposition().decode()
    assert "mlflow_app_mlflow_memory_bytes 1.23456789e+08" in text
    assert 'mlflow_app_mlflow_replacements_total{reason="reload"} 2.0' in text
    assert 'mlflow_app_mlflow_replacements_total{reason="memory"} 0.0' in text
    assert "mlflow_app_mlflow_replacing 1.0" in text
