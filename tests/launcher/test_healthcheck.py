"""`python -m launcher.healthcheck`, the container's HEALTHCHECK: which URL it asks, what it says."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest

from launcher.healthcheck import check, health_url
from tests.app_process import free_port


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:8000/health"),
        ({"MLFLOW_HOST": "0.0.0.0", "MLFLOW_PORT": "9000"}, "http://127.0.0.1:9000/health"),
        ({"MLFLOW_HOST": "::"}, "http://[::1]:8000/health"),
        ({"MLFLOW_HOST": "10.1.2.3", "DATABRICKS_APP_PORT": "8080"}, "http://10.1.2.3:8080/health"),
        ({"MLFLOW_HOST": "fd00::5", "MLFLOW_PORT": "81", "DATABRICKS_APP_PORT": "8080"}, "http://[fd00::5]:81/health"),
    ],
)
def test_it_asks_the_address_serve_listens_on(environ, url):
    assert health_url(environ) == url


@pytest.fixture
def health_server():
    """A /health that answers what the test puts in `answer`."""
    answer = {"status": 200, "body": {"status": "ok"}}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(answer["body"]).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/health", answer
    server.shutdown()


def test_healthy_only_on_200(health_server):
    url, answer = health_server
    assert check(url) == (True, "healthy")
    answer.update(status=503, body={"status": "unavailable", "reason": "mlflow is starting"})
    assert check(url) == (False, f"unhealthy: {url} answered 503 (mlflow is starting)")


def test_nothing_listening_is_unhealthy():
    url = f"http://127.0.0.1:{free_port()}/health"
    healthy, line = check(url)
    assert not healthy and line.startswith(f"unhealthy: cannot reach {url}")


def test_the_module_exits_0_or_1(health_server):
    url, answer = health_server
    port = url.split(":")[2].split("/")[0]
    run = lambda: subprocess.run([sys.executable, "-m", "launcher.healthcheck"], env={"MLFLOW_PORT": port}, capture_output=True, text=True, timeout=30)  # noqa: E731
    assert (run().returncode, run().stdout) == (0, "healthy\n")
    answer.update(status=503, body={"reason": "mlflow is restarting"})
    assert run().returncode == 1
