"""launcher/inside_mlflow/disconnects.py: a client's disconnect mid-body is one log line in the child, not a traceback (issue 11, item 8)."""

from __future__ import annotations

import importlib.util
import io
import logging
import logging.config
import sys
from pathlib import Path

import pytest
import yaml
from starlette.requests import ClientDisconnect

from launcher.inside_mlflow.disconnects import ClientDisconnectFold, is_client_disconnect, request_line
from launcher.inside_mlflow.serve_mlflow import CHILD_LOG_CONFIG

UPLOAD = {"type": "http", "method": "PUT", "path": "/api/2.0/mlflow-artifacts/artifacts/run/blob.bin"}


def raised_in_app(exc: BaseException, scope: dict | None = None) -> tuple:
    """exc_info as uvicorn holds it: raised inside an ASGI app called with `scope`."""

    async def app(scope, receive, send):  # the frame's locals are what the filter reads
        raise exc

    try:
        app(scope or UPLOAD, None, None).send(None)
    except BaseException:
        return sys.exc_info()
    raise AssertionError("not raised")


def record_of(exc_info: tuple, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, "Exception in ASGI application\n", (), exc_info)


def group(*exceptions: Exception) -> ExceptionGroup:
    return ExceptionGroup("unhandled errors in a TaskGroup", list(exceptions))


def chained_as_starlette_raises_it() -> ClientDisconnect:
    """BaseHTTPMiddleware's call_next: `raise app_exc from app_exc.__cause__ or app_exc.__context__`."""
    exc = ClientDisconnect()
    exc.__cause__ = group(ClientDisconnect())
    return exc


@pytest.mark.parametrize("exc", [ClientDisconnect(), group(ClientDisconnect()), chained_as_starlette_raises_it()])
def test_a_disconnect_is_folded_into_one_line_naming_the_request(exc):
    record = record_of(raised_in_app(exc))
    assert ClientDisconnectFold().filter(record) is True  # kept, rewritten
    assert record.getMessage() == "client disconnected during upload of PUT /api/2.0/mlflow-artifacts/artifacts/run/blob.bin (ClientDisconnect; traceback left out)"
    assert record.exc_info is None and record.exc_text is None
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a real failure"),
        group(ClientDisconnect(), ValueError("a real failure too")),  # a disconnect does not hide another error
        RuntimeError("raised while handling a disconnect"),
    ],
)
def test_other_errors_keep_their_traceback(exc):
    if isinstance(exc, RuntimeError):
        exc.__context__ = ClientDisconnect()
    record = record_of(raised_in_app(exc))
    assert ClientDisconnectFold().filter(record) is True
    assert record.exc_info is not None and record.levelno == logging.ERROR
    assert record.getMessage() == "Exception in ASGI application\n"


def test_a_record_without_an_exception_passes_untouched():
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (42,), None)
    assert ClientDisconnectFold().filter(record) is True
    assert record.getMessage() == "Started server process [42]"


def test_the_request_is_named_from_the_http_scope_the_apps_frames_hold():
    assert request_line(raised_in_app(ClientDisconnect(), {"type": "http", "method": "POST", "path": "/ajax-api/2.0/mlflow/runs/log-batch"})[2]) == (
        "POST /ajax-api/2.0/mlflow/runs/log-batch"
    )
    assert request_line(raised_in_app(ClientDisconnect(), {"type": "lifespan"})[2]) == "a request"
    assert not is_client_disconnect(None)


def test_the_childs_log_config_is_mlflows_plus_the_filter():
    # The file `mlflow server` gives uvicorn (mlflow/server/__init__.py, _UVICORN_LOG_CONFIG), found
    # without importing mlflow.server (seconds of CPU).
    mlflows_file = Path(importlib.util.find_spec("mlflow").origin).parent / "server" / "uvicorn_log_config.yaml"
    ours = yaml.safe_load(CHILD_LOG_CONFIG.read_text())
    mlflows = yaml.safe_load(mlflows_file.read_text())
    assert ours.pop("filters") == {"client_disconnects": {"()": "launcher.inside_mlflow.disconnects.ClientDisconnectFold"}}
    assert ours["handlers"]["default"].pop("filters") == ["client_disconnects"]
    assert ours == mlflows


def test_under_the_childs_log_config_uvicorn_logs_one_line(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)  # the config's handler writes to ext://sys.stderr
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level) for name in ("uvicorn", "uvicorn.access")}
    try:
        logging.config.dictConfig(yaml.safe_load(CHILD_LOG_CONFIG.read_text()))
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=raised_in_app(chained_as_starlette_raises_it()))
    finally:
        for name, (handlers, level) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).setLevel(level)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "WARNING:" in lines[0] and "client disconnected during upload of PUT /api/2.0/mlflow-artifacts/artifacts/run/blob.bin" in lines[0]
