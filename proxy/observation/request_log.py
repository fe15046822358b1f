"""One log line per request, with the request id that ties it to the client and to MLflow."""

from __future__ import annotations

import logging

from proxy.exchange import Exchange, request_id_from

__all__ = ["log_request", "request_id_from"]

log = logging.getLogger("mlflow_app.request")


def log_request(exchange: Exchange) -> None:
    """The request's line, once it has been answered (or has failed)."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status or 500,
        "duration_ms": round(exchange.seconds() * 1000, 2),
        "bytes_in": exchange.bytes_in,
        "bytes_out": exchange.bytes_out,
        "request_id": exchange.request_id,
        "user": exchange.user,
        "client": exchange.client_host,
    }
    # The record made directly, with no source file: Logger.info would look up the caller's file
    # and line in the stack on every request, for a line that never shows them.
    log.handle(log.makeRecord(log.name, logging.INFO, "", 0, "request", (), None, extra={"fields": fields}))
