"""One log line, not MLflow's ~190-line traceback, for a request whose client went away mid-body.

When the client of a request (here always the front, which cuts its connection to MLflow when its
own client goes away) disconnects while MLflow still reads the request's body, as in an aborted
artifact upload, Starlette raises `ClientDisconnect` and uvicorn logs "Exception in ASGI
application" with the whole middleware stack's traceback, twice over. Nothing failed on the
server's side, and the front's request line already says what the client got (499). The filter
here sits on the handler of uvicorn's loggers in the child's log config
(launcher/inside_mlflow/uvicorn_log_config.yaml) and turns that record into one line naming the request.
"""

from __future__ import annotations

import logging
from types import TracebackType

FOLDED_LEVEL = logging.WARNING  # not ERROR: the server is fine; visible still, as uploads cut short may be worth a look
FOLDED_MESSAGE = "client disconnected during upload of %s (ClientDisconnect; traceback left out)"


def is_client_disconnect(exc: BaseException | None) -> bool:
    """A Starlette `ClientDisconnect`, or an exception group holding only those (as anyio's task groups raise it)."""
    from starlette.requests import ClientDisconnect

    if isinstance(exc, BaseExceptionGroup):
        return all(is_client_disconnect(inner) for inner in exc.exceptions)
    return isinstance(exc, ClientDisconnect)


def request_line(tb: TracebackType | None) -> str:
    """'METHOD /path' of the ASGI scope the traceback's frames were called with; 'a request' if none has one."""
    while tb is not None:
        scope = tb.tb_frame.f_locals.get("scope")
        if isinstance(scope, dict) and scope.get("type") == "http":
            return f"{scope.get('method', '?')} {scope.get('path', '?')}"
        tb = tb.tb_next
    return "a request"


class ClientDisconnectFold(logging.Filter):
    """Rewrites a record whose exception is a client's disconnect into one line; other records pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_client_disconnect(record.exc_info[1]):
            record.msg, record.args = FOLDED_MESSAGE, (request_line(record.exc_info[2]),)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = FOLDED_LEVEL, logging.getLevelName(FOLDED_LEVEL)
        return True
