"""An aborted artifact upload is one line in the app's log, not MLflow's ~190-line traceback (issue 11, item 8).

The client sends the head of a PUT with a Content-Length larger than what it sends, then closes
its socket. The front cuts its connection to MLflow, whose Starlette raises `ClientDisconnect`
while reading the body; uvicorn used to log that with the whole middleware stack's traceback.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.app_process import AppProcess

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
FOLDED = "client disconnected during upload of PUT {path}"


def abort_an_upload(app: AppProcess, path: str) -> None:
    with socket.create_connection(("127.0.0.1", app.port), timeout=20) as raw:
        raw.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {64 * MIB}\r\n\r\n".encode() + b"c" * MIB)
        time.sleep(0.5)  # MLflow is reading the body by now


@pytest.mark.parametrize("arguments", [[], ["--workers", "2"]], ids=["one-process", "mlflow-server-workers"])
def test_an_aborted_upload_is_one_line_in_the_log(tmp_path, arguments):
    app = AppProcess(tmp_path, *arguments).start()
    try:
        app.wait_ready()
        path = "/api/2.0/mlflow-artifacts/artifacts/aborted/blob.bin"
        abort_an_upload(app, path)
        app.wait_until(lambda: FOLDED.format(path=path) in app.log_text(), 20, "the folded line")
        time.sleep(1)  # anything MLflow would print after it has arrived too
        log = app.log_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-5000:]
        mlflow_lines = [line for line in log.splitlines() if " mlflow | " in line]
        disconnect_lines = [line for line in mlflow_lines if "ClientDisconnect" in line or "disconnected" in line]
        assert len(disconnect_lines) == 1, disconnect_lines
        assert " WARNING " in disconnect_lines[0]
        assert f"PUT {path} 499 " in log  # the front's own request line says what the client got
        # MLflow still works, and a later upload through the same app succeeds.
        with socket.create_connection(("127.0.0.1", app.port), timeout=20) as raw:
            raw.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".encode())
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    finally:
        app.stop()
