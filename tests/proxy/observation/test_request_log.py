"""One log record per request, through the real front; and the request-id rules on their own."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import httpx
import pytest

from proxy.app import FrontConfig, create_app
from proxy.assets import UiAssets
from proxy.observation.request_log import request_id_from
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.proxy.conftest import INDEX_HTML, SSE_GAP_SECONDS

LOGGER = "mlflow_app.request"


@pytest.fixture
def request_records(caplog):
    """`await request_records(request_id)`: the front's records for one request, once it has logged."""
    caplog.set_level(logging.INFO, logger=LOGGER)

    def matching(request_id: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and r.fields["request_id"] == request_id]

    async def wait_for(request_id: str) -> list[logging.LogRecord]:
        # The front logs after the last byte is sent, so the client can be a moment ahead.
        deadline = time.monotonic() + 3
        while not matching(request_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # room for a second record, which must not come
        return matching(request_id)

    return wait_for


async def test_proxied_request_is_logged_once_with_its_measurements(client, request_records):
    body = b"x" * 1234
    response = await client.post(
        "/api/2.0/mlflow/runs/log-batch",
        content=body,
        headers={"X-Request-Id": "log-test-1", "X-Forwarded-Email": "ada@example.com"},
    )

    [record] = await request_records("log-test-1")
    assert record.levelno == logging.INFO
    assert record.fields == {
        "method": "POST",
        "path": "/api/2.0/mlflow/runs/log-batch",
        "status": 200,
        "duration_ms": record.fields["duration_ms"],
        "bytes_in": 1234,
        "bytes_out": len(response.content),
        "request_id": "log-test-1",
        "user": "ada@example.com",
        "client": "127.0.0.1",
    }
    assert record.fields["duration_ms"] > 0


async def test_behind_databricks_apps_the_log_names_the_user_and_the_real_client(start_front, request_records):
    """The platform's proxy sends X-Real-Ip and the user's names; a service principal may have no email."""
    front = start_front(config=FrontConfig(trusted_proxies=("*",)))
    platform = {"X-Real-Ip": "203.0.113.7", "X-Forwarded-User": "7010000000000042@1234567890123456", "X-Forwarded-Access-Token": "eyJ-user-token"}
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as client:
        await client.get("/api/2.0/mlflow/experiments/search", headers={**platform, "X-Forwarded-Email": "ada@example.com", "X-Request-Id": "log-apps-1"})
        await client.get("/api/2.0/mlflow/experiments/search", headers={**platform, "X-Forwarded-Preferred-Username": "sp-app-1", "X-Request-Id": "log-apps-2"})

    [with_email] = await request_records("log-apps-1")
    [without] = await request_records("log-apps-2")
    assert (with_email.fields["user"], with_email.fields["client"]) == ("ada@example.com", "203.0.113.7")
    assert (without.fields["user"], without.fields["client"]) == ("sp-app-1", "203.0.113.7")
    assert "eyJ-user-token" not in repr(with_email.fields) + repr(without.fields)


async def test_ui_request_is_logged_with_the_bytes_sent(client, request_records):
    response = await client.get("/", headers={"X-Request-Id": "log-ui"})

    [record] = await request_records("log-ui")
    assert (record.fields["method"], record.fields["path"], record.fields["status"]) == ("GET", "/", 200)
    assert record.fields["bytes_out"] == len(response.content) == len(INDEX_HTML)
    assert record.fields["bytes_in"] == 0
    assert record.fields["user"] is None


async def test_generated_request_id_in_the_log_matches_the_response(client, request_records):
    response = await client.get("/api/2.0/mlflow/experiments/search", headers={"X-Request-Id": "not a sane id"})

    request_id = response.headers["x-request-id"]
    assert request_id != "not a sane id"
    [record] = await request_records(request_id)
    assert record.fields["path"] == "/api/2.0/mlflow/experiments/search"


async def test_chunked_upload_counts_the_bytes_received(client, request_records):
    async def upload():
        for _ in range(4):
            yield b"y" * 1000

    await client.post("/api/2.0/mlflow/runs/log-batch", content=upload(), headers={"X-Request-Id": "log-chunked"})

    [record] = await request_records("log-chunked")
    assert record.fields["bytes_in"] == 4000


async def test_duration_covers_the_whole_streamed_response(client, request_records):
    async with client.stream("GET", "/sse", headers={"X-Request-Id": "log-sse"}) as response:
        await response.aread()

    [record] = await request_records("log-sse")
    assert record.fields["duration_ms"] >= 2 * SSE_GAP_SECONDS * 1000 * 0.9


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/2.0/mlflow/experiments/search", {"Host": "attacker.example"}, 403),
        ("/ajax-api/2.0/mlflow/runs/delete", {"Origin": "https://attacker.example"}, 403),
        ("/static-files/missing.js", {}, 404),
    ],
    ids=["host", "origin", "missing-asset"],
)
async def test_answers_made_by_the_front_are_logged_with_their_status(client, request_records, path, headers, status):
    method = "POST" if "Origin" in headers else "GET"
    response = await client.request(method, path, headers={**headers, "X-Request-Id": f"log-{status}"})

    assert response.status_code == status
    [record] = await request_records(f"log-{status}")
    assert record.fields["status"] == status


async def test_mlflow_not_ready_is_logged_as_503(start_front, request_records):
    front = start_front(phase=UpstreamPhase.STARTING)
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        await http.get("/api/2.0/mlflow/experiments/search", headers={"X-Request-Id": "log-503"})

    [record] = await request_records("log-503")
    assert record.fields["status"] == 503


class ExplodingAssets(UiAssets):
    async def response(self, relative_path, request_headers, method="GET"):
        raise RuntimeError("boom: internal detail /etc/secret")


async def test_handler_that_raises_is_logged_once_as_500_and_answers_mlflow_json(start_front, ui_build, request_records):
    front = start_front(assets=ExplodingAssets(ui_build))
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        response = await http.get("/", headers={"X-Request-Id": "log-500"})
    # uvicorn closes the connection after an app exception, so ask again on a new one.
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        health = await http.get("/health")

    assert health.status_code == 200  # the front itself carries on
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "log-500"
    body = response.json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == "INTERNAL_ERROR"
    assert "Traceback" not in response.text
    assert "boom" not in response.text and "/etc/secret" not in response.text
    [record] = await request_records("log-500")
    assert record.fields["status"] == 500


def bare_front(ui_build):
    """The front as an ASGI callable, no server: MLflow 'ready' at an address nothing listens on."""
    return create_app(FrontConfig(), UpstreamState(base_url="http://127.0.0.1:9", phase=UpstreamPhase.READY), UiAssets(ui_build))


async def test_app_that_fails_before_answering_is_still_logged_once_as_500(caplog, ui_build):
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def broken(exchange, receive, send, forward_origin):
        raise RuntimeError("boom")

    front = bare_front(ui_build)
    front.forwarder = broken

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"abc", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"host", b"localhost")], "client": ("10.0.0.9", 5000), "scheme": "http", "query_string": b""}
    with pytest.raises(RuntimeError):
        await front(scope, receive, send)

    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.fields["status"] == 500
    assert record.fields["client"] == "10.0.0.9"
    assert sent == []


async def test_non_http_scopes_pass_through_unlogged(caplog, ui_build):
    caplog.set_level(logging.INFO, logger=LOGGER)
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    front = bare_front(ui_build)
    front.own = app
    await front({"type": "lifespan"}, None, None)

    assert seen == ["lifespan"]
    assert [r for r in caplog.records if r.name == LOGGER] == []


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123", True),
        (b"7f1c2e0a-1b2c-4d5e-8f90-0123456789ab", True),
        (b"a.b_c:d-e", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"new\nline", False),
        (b'quote"', False),
        (b"<script>", False),
    ],
)
def test_request_id_from_keeps_only_sane_tokens(value, kept):
    request_id = request_id_from([(b"x-request-id", value)])

    if kept:
        assert request_id == value.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)


def test_request_id_from_generates_a_fresh_id_each_time():
    assert request_id_from([]) != request_id_from([])
