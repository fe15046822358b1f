"""Log output on stdout, as text for people or JSON for the platform, with secrets masked."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from launcher.redaction import Redactor

# The logger that carries the MLflow child's output. Not "mlflow": importing mlflow takes that one over.
CHILD_LOGGER = "mlflow_app.child"


def printable(text: str) -> str:
    """Control characters escaped, so a value from a request cannot forge or split a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def source_of(record: logging.LogRecord) -> str:
    """Which process a line comes from: `mlflow` for the child's output, `front` for ours."""
    return "mlflow" if record.name == CHILD_LOGGER else "front"


# One encoder for every line: json.dumps builds a new one per call when given any option.
JSON_LINE = json.JSONEncoder(ensure_ascii=False)
# Request fields that cannot carry a secret: the method (an HTTP token the parser checked) and the
# peer's address. Every other string is masked like the message.
UNREDACTED_FIELDS = frozenset({"method", "client"})


class SecondStamp:
    """`time.strftime` of a record's second, made once per second rather than once per line."""

    def __init__(self, pattern: str, convert) -> None:
        self.pattern = pattern
        self.convert = convert
        self._second = -1
        self._stamp = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.pattern, self.convert(second))
            self._second = second
        return self._stamp


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact
        self.stamp = SecondStamp("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": f"{self.stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "source": source_of(record),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = self.redact(value) if isinstance(value, str) and key not in UNREDACTED_FIELDS else value
        if record.exc_info:
            entry["error"] = self.redact(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return JSON_LINE.encode(entry)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact
        self.stamp = SecondStamp("%H:%M:%S", time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.stamp(record.created)
        fields = getattr(record, "fields", None)
        if fields and record.name == "mlflow_app.request":
            f = fields
            message = f"{f['method']} {f['path']} {f['status']} {f['duration_ms']}ms in={f['bytes_in']} out={f['bytes_out']} id={f['request_id']}"
            if f.get("user"):
                message += f" user={f['user']}"
        else:
            message = record.getMessage()
        if record.exc_info:
            message += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
        line = f"{stamp} {record.levelname:<7} {source_of(record):<6} | {message}"
        return printable(self.redact(line))


FLUSH_EVERY_SECONDS = 0.2


class BatchedStreamHandler(logging.StreamHandler):
    """A StreamHandler that gathers INFO lines (one per request) and writes them in one go at most
    `FLUSH_EVERY_SECONDS` later, from a background thread, as nginx buffers its access log; a
    WARNING or worse goes out at once, with whatever waits before it. The lines wait in the handler,
    not in the stream, so an unbuffered stdout (PYTHONUNBUFFERED, as in our image) does not turn
    them back into a system call per request."""

    def __init__(self, stream=None, flush_every: float = FLUSH_EVERY_SECONDS, max_waiting: int = 512):
        super().__init__(stream)
        self.flush_every = flush_every
        self.max_waiting = max_waiting
        self._waiting: list[str] = []
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)  # Handler.handle holds the lock
        if record.levelno >= logging.WARNING or len(self._waiting) >= self.max_waiting:
            self.flush()
        elif self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_every, name="log-flusher", daemon=True)
            self._flusher.start()

    def flush(self) -> None:
        with self.lock:
            if self._waiting:
                lines, self._waiting = self._waiting, []
                self.stream.write("".join(lines))
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.flush_every)
            if self._waiting:
                try:
                    self.flush()
                except (ValueError, OSError):
                    return  # the stream was closed under us (interpreter exit, a test's capture)


def configure_logging(log_format: str, level: str, redact: Redactor, mlflow_level: str | None = None) -> None:
    """One handler on stdout for us, uvicorn and MLflow's folded-in output (at `mlflow_level` if given)."""
    handler = BatchedStreamHandler(sys.stdout)
    # Nobody reads a record's thread or process names; filling them in costs on every request.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger(CHILD_LOGGER).setLevel((mlflow_level or level).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our request log replaces it
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
