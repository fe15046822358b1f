"""The one place a finished request is accounted for: the metrics and the request log line."""

from __future__ import annotations

from proxy.exchange import Exchange
from proxy.observation.metrics import FrontMetrics
from proxy.observation.request_log import log_request
from proxy.sub_path import SubPath

METRICS_PATH = "/metrics"
# Answers of the front's own refusals (no credentials, foreign Host or Origin): never a new route.
REFUSED_STATUSES = frozenset({401, 403})


class RequestObserver:
    """Counts requests in flight, and records each one once when it ends, whatever happened."""

    def __init__(self, metrics: FrontMetrics, static_prefix: str = ""):
        self.metrics = metrics
        self.metrics_path = static_prefix + METRICS_PATH
        # Under a prefix, paths are labelled as MLflow's route table names them (without it).
        self.sub_path = SubPath(static_prefix) if static_prefix else None

    def started(self, exchange: Exchange) -> None:
        if exchange.path != self.metrics_path:  # a scrape would always see itself
            self.metrics.in_flight += 1

    def finished(self, exchange: Exchange) -> None:
        metrics = self.metrics
        path = exchange.path
        if path != self.metrics_path:
            metrics.in_flight -= 1
        if self.sub_path is not None:
            path = self.sub_path.route_path(path)
        status = exchange.status or 500
        metrics.observe(
            exchange.method,
            metrics.route_label(path, admit=status not in REFUSED_STATUSES),
            status,
            exchange.seconds(),
            exchange.upstream_seconds,
            exchange.bytes_in,
            exchange.bytes_out,
        )
        log_request(exchange)
