"""One log line per request, with the request id that ties it to the client and to MLflow."""

from __future__ import annotations

import logging
import time

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
        "client": exchange.client,
    }
    # A record stamped from one made at import, rather than made anew: LogRecord.__init__ costs
    # about a dozen calls (the caller's file, the level's name, ...) for fields this line never shows.
    created = time.time()
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = record.__dict__
    attributes.update(_TEMPLATE)
    attributes["created"] = created
    attributes["msecs"] = int((created - int(created)) * 1000) + 0.0
    attributes["relativeCreated"] = _TEMPLATE["relativeCreated"] + (created - _TEMPLATE["created"]) * 1000
    attributes["fields"] = fields
    log.handle(record)


_TEMPLATE = log.makeRecord(log.name, logging.INFO, "", 0, "request", (), None).__dict__
