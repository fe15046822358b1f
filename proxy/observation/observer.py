"""The one place a finished request is accounted for: the metrics and the request log line."""

from __future__ import annotations

from proxy.exchange import Exchange
from proxy.observation.metrics import FrontMetrics
from proxy.observation.request_log import log_request

METRICS_PATH = "/metrics"
# Answers of the front's own refusals (no credentials, foreign Host or Origin): never a new route.
REFUSED_STATUSES = frozenset({401, 403})


class RequestObserver:
    """Counts requests in flight, and records each one once when it ends, whatever happened."""

    def __init__(self, metrics: FrontMetrics):
        self.metrics = metrics

    def started(self, exchange: Exchange) -> None:
        if exchange.path != METRICS_PATH:  # a scrape would always see itself
            self.metrics.in_flight += 1

    def finished(self, exchange: Exchange) -> None:
        metrics = self.metrics
        if exchange.path != METRICS_PATH:
            metrics.in_flight -= 1
        status = exchange.status or 500
        metrics.observe(
            exchange.method,
            metrics.route_label(exchange.path, admit=status not in REFUSED_STATUSES),
            status,
            exchange.seconds(),
            exchange.upstream_seconds,
            exchange.bytes_in,
            exchange.bytes_out,
        )
        log_request(exchange)
