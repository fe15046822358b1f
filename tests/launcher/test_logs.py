"""Log lines: JSON for collectors, text for people; one line per record, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time

import pytest

from launcher.logs import CHILD_LOGGER, BatchedStreamHandler, JsonFormatter, TextFormatter, configure_logging, printable, source_of
from launcher.redaction import Redactor

SECRET = "dapi-0123456789abcdef-secret"
REQUEST_FIELDS = {
    "method": "GET",
    "path": "/ajax-api/2.0/mlflow/experiments/search",
    "status": 200,
    "duration_ms": 12.34,
    "bytes_in": 0,
    "bytes_out": 512,
    "request_id": "req-42",
}


def record(name: str = "mlflow_app.launcher", message: str = "hello", level: int = logging.INFO, *, fields=None, exc_info=None, created: float | None = None) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(name, level, __file__, 1, message, (), exc_info, extra={"fields": fields} if fields else None)
    if created is not None:
        made.created, made.msecs = created, (created - int(created)) * 1000
    return made


def raised() -> tuple:
    try:
        raise ValueError(f"could not connect with {SECRET}")
    except ValueError:
        return sys.exc_info()


@pytest.fixture
def as_json() -> JsonFormatter:
    return JsonFormatter(Redactor([SECRET]))


@pytest.fixture
def as_text() -> TextFormatter:
    return TextFormatter(Redactor([SECRET]))


# --- JSON --------------------------------------------------------------------------------------


@pytest.fixture
def far_from_utc(monkeypatch):
    """A local time zone that is not UTC, so a local timestamp cannot pass for a UTC one."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_json_line_has_the_documented_fields(as_json, far_from_utc):
    line = as_json.format(record("mlflow_app.launcher", "MLflow is ready", logging.WARNING, created=1_700_000_000.25))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "source": "front",
        "logger": "mlflow_app.launcher",
        "message": "MLflow is ready",
    }


def test_json_timestamp_is_utc_iso8601(as_json):
    ts = json.loads(as_json.format(record()))["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)


def test_json_request_fields(as_json):
    fields = {**REQUEST_FIELDS, "user": "someone@example.com"}
    entry = json.loads(as_json.format(record("mlflow_app.request", "request", fields=fields)))
    assert entry["message"] == "request"
    for key, value in fields.items():
        assert entry[key] == value  # numbers stay numbers
    assert isinstance(entry["status"], int) and isinstance(entry["duration_ms"], float)


def test_json_keeps_a_hostile_path_on_one_line_and_intact(as_json):
    path = '/api/2.0/x\r\n{"level": "error", "message": "forged"}\x1b[2J'
    line = as_json.format(record("mlflow_app.request", "request", fields={**REQUEST_FIELDS, "path": path}))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert json.loads(line)["path"] == path


def test_json_masks_secrets_in_message_fields_and_errors(as_json):
    line = as_json.format(
        record(
            CHILD_LOGGER,
            f"connecting to postgresql://mlflow:pg-pass-77@db/mlflow with Bearer {SECRET}",
            fields={**REQUEST_FIELDS, "user": f"token={SECRET}"},
            exc_info=raised(),
        )
    )
    assert SECRET not in line and "pg-pass-77" not in line
    entry = json.loads(line)
    assert entry["message"] == "connecting to postgresql://mlflow:***@db/mlflow with Bearer ***"
    assert entry["user"] == "token=***"
    assert entry["error"] == "ValueError: could not connect with ***"


def test_json_non_ascii_stays_readable(as_json):
    assert json.loads(as_json.format(record(message="expérience ✓")))["message"] == "expérience ✓"


# --- text --------------------------------------------------------------------------------------


def test_text_line_shape(as_text):
    line = as_text.format(record(CHILD_LOGGER, "INFO mlflow.store: creating tables", logging.INFO))
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    mlflow \| INFO mlflow.store: creating tables", line), line


def test_text_request_line(as_text):
    line = as_text.format(record("mlflow_app.request", "request", fields={**REQUEST_FIELDS, "user": "someone@example.com"}))
    assert line.endswith("front  | GET /ajax-api/2.0/mlflow/experiments/search 200 12.34ms in=0 out=512 id=req-42 user=someone@example.com")
    assert "user=" not in as_text.format(record("mlflow_app.request", "request", fields=REQUEST_FIELDS))


def test_text_escapes_crlf_in_a_request_path(as_text):
    forged = "/x\r\n12:00:00 ERROR   front  | GET /admin 200 0ms in=0 out=0 id=forged"
    line = as_text.format(record("mlflow_app.request", "request", fields={**REQUEST_FIELDS, "path": forged}))
    assert "\n" not in line and "\r" not in line
    assert len(line.splitlines()) == 1
    assert "/x\\r\\n12:00:00 ERROR" in line  # visible, escaped, on the same line


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("\x1b[31mred", "\\x1b[31mred"), ("nul\x00", "nul\\x00"), ("tab\there", "tab\\there"), ("ls\u2028sep", "ls\\u2028sep"), ("\x7f", "\\x7f")],
)
def test_text_escapes_control_characters(as_text, raw, shown):
    line = as_text.format(record("mlflow_app.request", "request", fields={**REQUEST_FIELDS, "path": "/" + raw}))
    assert "/" + shown in line
    assert line.isprintable()


def test_text_masks_secrets(as_text):
    line = as_text.format(record(CHILD_LOGGER, f"GET /x?access_token={SECRET} via https://user:hunter2pass@host/ Authorization: Bearer abc.def", exc_info=raised()))
    assert SECRET not in line and "hunter2pass" not in line and "abc.def" not in line
    assert "access_token=***" in line and "https://user:***@host/" in line and "Bearer ***" in line
    assert line.endswith("(ValueError: could not connect with ***)")


def test_text_masks_secrets_in_request_fields(as_text):
    line = as_text.format(record("mlflow_app.request", "request", fields={**REQUEST_FIELDS, "path": f"/x/{SECRET}"}))
    assert SECRET not in line and "/x/***" in line


def test_printable_leaves_ordinary_text_alone():
    assert printable("GET /static-files/main.abc123.js 200 — ok ✓") == "GET /static-files/main.abc123.js 200 — ok ✓"
    assert printable("a\\nb") == "a\\nb"  # an already-escaped backslash stays as it was


# --- source ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logger", "source"),
    [
        (CHILD_LOGGER, "mlflow"),
        ("mlflow", "front"),  # the mlflow library imported into the front is the front's own code
        ("mlflow.store.db.utils", "front"),
        ("mlflow_app", "front"),
        ("mlflow_app.request", "front"),
        ("mlflow_app.launcher", "front"),
        ("uvicorn.error", "front"),
        ("httpx", "front"),
        ("root", "front"),
        ("mlflowish", "front"),
    ],
)
def test_source(logger, source, as_json, as_text):
    made = record(logger)
    assert source_of(made) == source
    assert json.loads(as_json.format(made))["source"] == source
    assert f" {source:<6} | " in as_text.format(made)


# --- configure_logging -------------------------------------------------------------------------


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", CHILD_LOGGER)
    saved = (root.handlers[:], root.level, {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).disabled, logging.getLogger(n).level) for n in names})
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, (handlers, propagate, disabled, level) in saved[2].items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.disabled = handlers, propagate, disabled
        logger.setLevel(level)


@pytest.mark.parametrize(("log_format", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_one_handler_on_stdout(restore_logging, capsys, log_format, formatter):
    configure_logging(log_format, "warning", Redactor([SECRET]))
    root = logging.getLogger()
    assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, formatter)
    assert root.level == logging.WARNING
    assert logging.getLogger("uvicorn.access").disabled
    logging.getLogger(CHILD_LOGGER).warning("token %s leaked", SECRET)
    logging.getLogger(CHILD_LOGGER).info("below the level")
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and "below the level" not in out
    assert SECRET not in out and "token *** leaked" in out
    if log_format == "json":
        assert json.loads(out)["source"] == "mlflow"


def test_mlflows_output_has_its_own_level(restore_logging, capsys):
    configure_logging("text", "info", Redactor(), mlflow_level="warning")
    logging.getLogger(CHILD_LOGGER).info('127.0.0.1:0 - "GET /api/2.0/mlflow/experiments/search HTTP/1.1" 200 OK')
    logging.getLogger(CHILD_LOGGER).error("MLflow failed")
    logging.getLogger("mlflow_app.request").info("front request line")
    logging.getLogger().handlers[0].flush()  # INFO lines wait in the handler for a moment
    out = capsys.readouterr().out
    assert "MLflow failed" in out and "front request line" in out and "experiments/search" not in out

    configure_logging("text", "warning", Redactor(), mlflow_level="debug")
    logging.getLogger(CHILD_LOGGER).debug("MLflow debug line")
    logging.getLogger("mlflow_app.request").info("front request line")
    logging.getLogger().handlers[0].flush()
    out = capsys.readouterr().out
    assert "MLflow debug line" in out and "front request line" not in out


def test_mlflows_output_follows_the_front_level_by_default(restore_logging, capsys):
    configure_logging("text", "warning", Redactor())
    assert logging.getLogger(CHILD_LOGGER).getEffectiveLevel() == logging.WARNING


def test_info_lines_are_written_together_a_moment_later_and_a_warning_at_once(restore_logging):
    class CountingStream(io.StringIO):
        writes = 0

        def write(self, text):
            self.writes += 1
            return super().write(text)

    stream = CountingStream()
    handler = BatchedStreamHandler(stream, flush_every=0.2)
    handler.setFormatter(TextFormatter(Redactor()))
    logger = logging.getLogger("mlflow_app.request.batch-test")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        for i in range(50):
            logger.info("line %d", i)
        assert stream.getvalue() == ""  # waiting in the handler
        deadline = time.monotonic() + 3
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.getvalue().count("\n") == 50 and stream.writes == 1
        logger.info("before the warning")
        logger.warning("now")
        lines = stream.getvalue().splitlines()
        assert [line.split("| ")[1] for line in lines[-2:]] == ["before the warning", "now"]
    finally:
        logger.handlers[:] = []
