"""`/metrics`: the front's requests, the MLflow child's state and the process, for Prometheus.

`FrontMetrics` owns a registry of its own (never prometheus_client's global one), so each app
built by `create_app` counts only its own requests. `proxy.observer` records every request into it;
`UpstreamCollector` reads `UpstreamState` when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from proxy.routes import RouteLabels
from proxy.upstream import UpstreamPhase, UpstreamState

PREFIX = "mlflow_app"
# 1 ms (a cached asset) to 120 s (the platform's proxy cuts requests there).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
# The classic text format, labelled as prometheus_client's own server labels it for scrapers that
# do not ask for more. (Its CONTENT_TYPE_LATEST says version=1.0.0: the same bytes, under a version
# that older scrapers do not know.)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def method_label(method: str) -> str:
    return method if method in STANDARD_METHODS else "OTHER"


@dataclass(frozen=True)
class RouteSeries:
    """The labelled children of one route, looked up once and kept (prometheus_client locks per lookup)."""

    duration: Histogram
    upstream: Histogram
    bytes_in: Counter
    bytes_out: Counter


class FrontMetrics:
    """Every metric the front exports, in a registry of its own."""

    def __init__(self, state: UpstreamState, route_labels: RouteLabels | None = None):
        self.registry = CollectorRegistry()
        self.route_label = route_labels or RouteLabels()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(UpstreamCollector(state))
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered by the front, by method, route and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer, by route.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Time from sending a request to MLflow until MLflow's response headers arrive, by route.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "Requests being served now (scrapes of /metrics not included).",
            registry=self.registry,
        )
        self.bytes_in = Counter(
            f"{PREFIX}_request_bytes",
            "Request body bytes received from clients, by route.",
            ["route"],
            registry=self.registry,
        )
        self.bytes_out = Counter(
            f"{PREFIX}_response_bytes",
            "Response body bytes sent to clients (as sent, compressed or not), by route.",
            ["route"],
            registry=self.registry,
        )
        self._routes: dict[str, RouteSeries] = {}
        self._request_counters: dict[tuple[str, str, int], Counter] = {}

    def series(self, route: str) -> RouteSeries:
        found = self._routes.get(route)
        if found is None:
            found = self._routes[route] = RouteSeries(
                self.duration.labels(route),
                self.upstream_duration.labels(route),
                self.bytes_in.labels(route),
                self.bytes_out.labels(route),
            )
        return found

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        upstream_seconds: float | None,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """Record one finished request."""
        key = (method_label(method), route, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.requests.labels(key[0], route, str(status))
        counter.inc()
        series = self.series(route)
        series.duration.observe(seconds)
        if upstream_seconds is not None:
            series.upstream.observe(upstream_seconds)
        if bytes_in:
            series.bytes_in.inc(bytes_in)
        if bytes_out:
            series.bytes_out.inc(bytes_out)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(WithoutCreated(self.registry))

    def response(self) -> Response:
        return Response(self.exposition(), headers={"Content-Type": TEXT_FORMAT, "Cache-Control": "no-store"})


class WithoutCreated:
    """The registry without `*_created` samples: a timestamp series beside every counter and
    histogram child, which doubles the series count and which Prometheus does not need.
    (prometheus_client can only turn them off process-wide.)"""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            if family.type in ("counter", "histogram", "summary"):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class UpstreamCollector(Collector):
    """The MLflow child as `UpstreamState` says at scrape time (written by the supervisor)."""

    def __init__(self, state: UpstreamState):
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state = self.state
        yield GaugeMetricFamily(
            f"{PREFIX}_mlflow_up", "1 when the MLflow child is ready to take requests, else 0.", value=int(state.ready)
        )
        phase = GaugeMetricFamily(
            f"{PREFIX}_mlflow_phase",
            "The MLflow child's phase: 1 for the current one (starting, ready, restarting, stopping, down).",
            labels=["phase"],
        )
        for each in UpstreamPhase:
            phase.add_metric([each.value], int(state.phase is each))
        yield phase
        yield CounterMetricFamily(
            f"{PREFIX}_mlflow_restarts", "Times the MLflow child has been restarted since the front started.", value=state.restarts
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_mlflow_uptime_seconds",
            "Seconds since the MLflow child last became ready; 0 while it is not ready.",
            value=state.uptime_seconds(),
        )
