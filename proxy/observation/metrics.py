"""`/metrics`: the front's requests, the MLflow child's state and the process, for Prometheus.

`FrontMetrics` owns a registry of its own (never prometheus_client's global one), so each app
built by `create_app` counts only its own requests. `proxy.observation.observer` records every request into it;
`UpstreamCollector` reads `UpstreamState` when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.responses import Response

from proxy.forwarding.upstream_client import PoolLoad
from proxy.observation.routes import RouteLabels
from proxy.upstream import UpstreamPhase, UpstreamState

PREFIX = "mlflow_app"
# 1 ms (a cached asset) to 120 s (the platform's proxy cuts requests there).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BUCKET_LABELS = (*(floatToGoString(bound) for bound in DURATION_BUCKETS), "+Inf")
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
# The classic text format, labelled as prometheus_client's own server labels it for scrapers that
# do not ask for more. (Its CONTENT_TYPE_LATEST says version=1.0.0: the same bytes, under a version
# that older scrapers do not know.)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def method_label(method: str) -> str:
    return method if method in STANDARD_METHODS else "OTHER"


class Histogram:
    """One route's histogram as plain numbers: a count per bucket and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets = []
        for bound, count in zip(BUCKET_LABELS, self.counts):
            running += count
            buckets.append((bound, running))
        return buckets


class RouteTally:
    """What one route's requests have added up to."""

    __slots__ = ("duration", "upstream", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.duration = Histogram()
        self.upstream = Histogram()
        self.bytes_in = 0
        self.bytes_out = 0


class FrontMetrics:
    """Every metric the front exports, in a registry of its own.

    Requests are tallied in plain numbers on the event loop (prometheus_client's metric objects
    take a lock per update, eight per request) and turned into metric families when scraped, which
    also happens on the event loop."""

    def __init__(self, state: UpstreamState, route_labels: RouteLabels | None = None):
        self.registry = CollectorRegistry()
        self.route_label = route_labels or RouteLabels()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(UpstreamCollector(state))
        self.registry.register(RequestCollector(self))
        self.in_flight = 0
        self.requests: dict[tuple[str, str, int], int] = {}
        self.routes: dict[str, RouteTally] = {}

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
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        tally = self.routes.get(route)
        if tally is None:
            tally = self.routes[route] = RouteTally()
        tally.duration.observe(seconds)
        if upstream_seconds is not None:
            tally.upstream.observe(upstream_seconds)
        tally.bytes_in += bytes_in
        tally.bytes_out += bytes_out

    def watch_pool(self, load: Callable[[], PoolLoad]) -> None:
        """Export how busy the connections to MLflow are (the forwarder's client owns them)."""
        self.registry.register(PoolCollector(load))

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


# The per-route families: name and help.
ROUTE_FAMILIES = {
    "duration": (f"{PREFIX}_request_duration_seconds", "Time from a request's arrival to the last byte of its answer, by route."),
    "upstream": (
        f"{PREFIX}_upstream_duration_seconds",
        "Time from sending a request to MLflow until MLflow's response headers arrive, by route.",
    ),
    "bytes_in": (f"{PREFIX}_request_bytes", "Request body bytes received from clients, by route."),
    "bytes_out": (f"{PREFIX}_response_bytes", "Response body bytes sent to clients (as sent, compressed or not), by route."),
}


class RequestCollector(Collector):
    """`FrontMetrics`' tallies as Prometheus metric families, at scrape time."""

    def __init__(self, metrics: FrontMetrics):
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests answered by the front, by method, route and status code.", labels=["method", "route", "status"])
        for (method, route, status), count in metrics.requests.items():
            requests.add_metric([method, route, str(status)], count)
        yield requests
        duration = HistogramMetricFamily(*ROUTE_FAMILIES["duration"], labels=["route"])
        upstream = HistogramMetricFamily(*ROUTE_FAMILIES["upstream"], labels=["route"])
        bytes_in = CounterMetricFamily(*ROUTE_FAMILIES["bytes_in"], labels=["route"])
        bytes_out = CounterMetricFamily(*ROUTE_FAMILIES["bytes_out"], labels=["route"])
        for route, tally in metrics.routes.items():
            duration.add_metric([route], tally.duration.cumulative(), tally.duration.sum)
            upstream.add_metric([route], tally.upstream.cumulative(), tally.upstream.sum)
            bytes_in.add_metric([route], tally.bytes_in)
            bytes_out.add_metric([route], tally.bytes_out)
        yield duration
        yield upstream
        yield GaugeMetricFamily(f"{PREFIX}_requests_in_flight", "Requests being served now (scrapes of /metrics not included).", value=metrics.in_flight)
        yield bytes_in
        yield bytes_out


class PoolCollector(Collector):
    """The connections to MLflow at scrape time: in use, the limit, and requests waiting for one."""

    def __init__(self, load: Callable[[], PoolLoad]):
        self.load = load

    def collect(self) -> Iterable[Metric]:
        load = self.load()
        yield GaugeMetricFamily(f"{PREFIX}_upstream_connections_in_use", "Connections to MLflow serving a request now.", value=load.in_use)
        yield GaugeMetricFamily(f"{PREFIX}_upstream_connections_limit", "The most connections the front opens to MLflow.", value=load.limit)
        yield GaugeMetricFamily(f"{PREFIX}_upstream_requests_waiting", "Requests waiting for a connection to MLflow to come free.", value=load.waiting)


class UpstreamCollector(Collector):
    """The MLflow child as `UpstreamState` says at scrape time (written by the supervisor)."""

    def __init__(self, state: UpstreamState):
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state = self.state
        yield GaugeMetricFamily(f"{PREFIX}_mlflow_up", "1 when the MLflow child is ready to take requests, else 0.", value=int(state.ready))
        phase = GaugeMetricFamily(
            f"{PREFIX}_mlflow_phase",
            "The MLflow child's phase: 1 for the current one (starting, ready, restarting, stopping, down).",
            labels=["phase"],
        )
        for each in UpstreamPhase:
            phase.add_metric([each.value], int(state.phase is each))
        yield phase
        yield CounterMetricFamily(f"{PREFIX}_mlflow_restarts", "Times the MLflow child has been restarted since the front started.", value=state.restarts)
        yield GaugeMetricFamily(
            f"{PREFIX}_mlflow_uptime_seconds",
            "Seconds since the MLflow child last became ready; 0 while it is not ready.",
            value=state.uptime_seconds(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_mlflow_memory_bytes",
            "Resident memory of the serving MLflow child's whole process tree at its last measurement; 0 before the first.",
            value=state.memory_bytes or 0,
        )
        replacements = CounterMetricFamily(
            f"{PREFIX}_mlflow_replacements",
            "MLflow children replaced by a new one started beside them, by reason (reload, memory, liveness).",
            labels=["reason"],
        )
        for reason in state.REPLACEMENT_REASONS:
            replacements.add_metric([reason], state.replacements.get(reason, 0))
        yield replacements
        yield GaugeMetricFamily(f"{PREFIX}_mlflow_replacing", "1 while a new MLflow child is starting beside the serving one, else 0.", value=int(state.replacing is not None))
