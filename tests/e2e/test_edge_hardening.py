"""What an adversarial probe of a running app found (issue 11), held shut against the real app.

Each test sends what the probe sent, byte for byte where a client library would tidy it up, and
reads back what the client got, what MLflow was sent and what the log says.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.app_process import AppProcess
from tests.e2e.conftest import AUTH_TOKEN
from tests.raw_http import exchange

SEARCH = "/api/2.0/mlflow/experiments/search"


def preflight_with_stalled_body(origin: str = "http://x") -> bytes:
    """The probe's preflight: a body announced, ten bytes of it sent, the rest never."""
    return (f"OPTIONS {SEARCH} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nContent-Length: 1000\r\n\r\n").encode() + b"x" * 10


def read_head(sock: socket.socket, timeout: float) -> bytes:
    """Bytes until the end of a response's head (or the timeout, or the close)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


# --- unauthenticated requests never reach MLflow (item 1) ---------------------------------------


def test_preflights_without_the_token_are_answered_by_the_front_and_never_hold_mlflow(secured_app):
    # The probe held MLflow's connections with such preflights, which need no token: each was
    # forwarded and waited for a body that never came.
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", secured_app.port))
            sock.sendall(preflight_with_stalled_body())
            sockets.append(sock)
        answers = [read_head(sock, timeout=5) for sock in sockets]
        assert all(status_of(answer) == 400 for answer in answers), answers[0]  # http://x is not an allowed origin
        held_by_front = secured_app.upstream_connections()
        assert held_by_front < 20
        allowed = socket.create_connection(("127.0.0.1", secured_app.port))
        sockets.append(allowed)
        allowed.sendall(preflight_with_stalled_body(origin="http://localhost:3000"))
        answer = read_head(allowed, timeout=5)
        assert status_of(answer) == 200
        assert b"access-control-allow-origin: http://localhost:3000" in answer.lower()
        assert b"access-control-allow-credentials: true" in answer.lower()
        # With the token, MLflow answers at once.
        response = httpx.get(f"{secured_app.url}{SEARCH}?max_results=1", headers={"Authorization": f"Bearer {AUTH_TOKEN}"}, timeout=10)
        assert response.status_code == 200
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_any_method_on_health_is_answered_by_the_front_with_an_unknown_host(secured_app, method):
    # POST /health skipped the Host check and went to MLflow without the token.
    response = httpx.request(method, f"{secured_app.url}/health", headers={"Host": "attacker.example"}, content=b"x" * 10, timeout=10)
    assert response.status_code == 405
    assert response.json()["error_code"] == "BAD_REQUEST"


# --- one client address cannot take every connection to MLflow; /health says how busy (item 1) --


@pytest.fixture(scope="module")
def capped_app(tmp_path_factory):
    """An app that believes forwarded headers from 127.0.0.1 only, with three requests at MLflow per
    client address; connections from 127.0.0.2 are a client that is no proxy."""
    running = AppProcess(
        tmp_path_factory.mktemp("capped-app"),
        env={
            "MLFLOW_APP_MAX_UPSTREAM_PER_CLIENT": "3",
            "MLFLOW_APP_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "MLFLOW_APP_CLIENT_IDLE_TIMEOUT": "30",
            "MLFLOW_APP_LOG_FORMAT": "json",  # the request log's user and client fields
        },
    ).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def stalled_upload(port: int, forwarded_for: str) -> socket.socket:
    """An artifact upload that sends part of its body and stops: its request stays in progress."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"PUT /api/2.0/mlflow-artifacts/artifacts/stalled/blob.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"X-Forwarded-For: {forwarded_for}\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"x" * 1000
    )
    return sock


def test_one_client_address_gets_429_beyond_its_share_while_others_are_served(capped_app):
    stalled = [stalled_upload(capped_app.port, "10.0.0.1") for _ in range(3)]
    try:
        capped_app.wait_until(lambda: capped_app.upstream_connections() >= 3, 10, "three uploads at MLflow")
        url = f"{capped_app.url}{SEARCH}?max_results=1"
        same = httpx.get(url, headers={"X-Forwarded-For": "10.0.0.1"}, timeout=10)
        assert same.status_code == 429
        assert same.headers["retry-after"] == "1"
        assert same.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        other = httpx.get(url, headers={"X-Forwarded-For": "10.0.0.2"}, timeout=10)
        assert other.status_code == 200
        health = httpx.get(f"{capped_app.url}/health", timeout=10).json()
        assert health["connections"]["in_use"] >= 3 and health["connections"]["limit"] == 512
        assert health["status"] == "ok"  # busy, but nothing waits for a connection
    finally:
        for sock in stalled:
            sock.close()
    # Once they are gone, the address has its share back.
    capped_app.wait_until(
        lambda: httpx.get(f"{capped_app.url}{SEARCH}?max_results=1", headers={"X-Forwarded-For": "10.0.0.1"}, timeout=10).status_code == 200,
        10,
        "the share freed",
    )


# --- forwarded headers only from configured proxies (item 7) -------------------------------------


def from_address(source: str, port: int, request: bytes) -> bytes:
    """Send `request` from a chosen loopback source address; the answer until the server closes."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_forwarded_headers_from_a_client_that_is_no_proxy_count_for_nothing(capped_app):
    # A client faked X-Forwarded-Host to make a foreign page's write look same-origin, and
    # X-Forwarded-Email to choose the user in the request log.
    body = json.dumps({"name": "forged-origin"}).encode()
    forged = (
        b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
        b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Email: mallory@evil.example\r\n"
        b"X-Request-Id: forged-origin-1\r\nContent-Type: application/json\r\nConnection: close\r\n" + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = from_address("127.0.0.2", capped_app.port, forged)
    assert status_of(answer) == 403
    assert b"Cross-origin request blocked" in answer
    # From the configured proxy the same claims hold: the page is on the public host it names.
    trusted = from_address("127.0.0.1", capped_app.port, forged.replace(b"forged-origin-1", b"forged-origin-2"))
    assert status_of(trusted) == 200
    capped_app.wait_until(lambda: "forged-origin-2" in capped_app.log_text(), 5, "the request log line")
    untrusted, trusted = (request_log_entry(capped_app, request_id) for request_id in ("forged-origin-1", "forged-origin-2"))
    assert untrusted.get("user") is None and untrusted["client"] == "127.0.0.2"
    assert trusted["user"] == "mallory@evil.example"


def request_log_entry(app: AppProcess, request_id: str) -> dict:
    for line in app.log_text().splitlines():
        if request_id in line and line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") == request_id:
                return entry
    raise AssertionError(f"no request log line for {request_id}")


def test_an_origin_of_another_scheme_is_not_the_same_origin(capped_app):
    # https://10.0.0.5:<port> is another origin than the http:// page the front serves there.
    public = f"10.0.0.5:{capped_app.port}"
    url = f"{capped_app.url}/api/2.0/mlflow/experiments/create"
    other = httpx.post(url, json={"name": "other-scheme"}, headers={"Origin": f"https://{public}", "Host": public}, timeout=10)
    assert other.status_code == 403
    same = httpx.post(url, json={"name": "same-scheme"}, headers={"Origin": f"http://{public}", "Host": public}, timeout=10)
    assert same.status_code == 200


# --- Host values no browser sends; what MLflow says of itself (item 8) --------------------------


@pytest.mark.parametrize("host", ["[fd00::1]evil.com", "10.0.0.1:80@evil", "evil.com#.databricksapps.com", "127.0.0.1:99999"])
def test_a_host_that_is_not_host_and_port_is_refused(app, host):
    answer, _ = exchange(app.port, f"GET {SEARCH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) == 403
    assert b"PERMISSION_DENIED" in answer


def test_mlflow_does_not_announce_its_server(app):
    response = httpx.get(f"{app.url}{SEARCH}?max_results=1", timeout=10)
    assert response.status_code == 200
    assert "server" not in response.headers


def test_a_path_with_dot_segments_reaches_mlflow_as_sent(app):
    # README: the path passes as sent; the front does not resolve "..", and MLflow has no route for
    # one (curl resolves them itself unless given --path-as-is, which is what a probe saw).
    answer, _ = exchange(app.port, "GET /api/2.0/mlflow/../mlflow/experiments/search?max_results=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) == 404
