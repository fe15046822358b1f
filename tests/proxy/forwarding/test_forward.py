"""Forwarding through the real front to a fake MLflow, both on real uvicorn servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time

import httpx
import pytest

from proxy.app import FrontConfig
from proxy.edge.policy import EdgePolicy
from proxy.upstream import UpstreamPhase
from tests.proxy.conftest import DOWNLOAD_CHUNK, GZIPPED_JSON, SSE_GAP_SECONDS, UPSTREAM_TIMEOUT, closed_port

PUBLIC_HOST = "myapp-1234567890.aws.databricksapps.com"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def seen_headers(seen: dict, name: str) -> list[str]:
    """Values of header `name` as the fake MLflow received them."""
    return [value for key, value in seen["headers"] if key == name]


def last_call(fake_mlflow) -> dict:
    assert fake_mlflow.calls, "the request never reached MLflow"
    return fake_mlflow.calls[-1]


async def raw_request(port: int, request: bytes) -> bytes:
    """Send exactly `request` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def assert_mlflow_error(response: httpx.Response, status: int, error_code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_code"] == error_code
    assert body["message"]
    return body


# --- the request line and body -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_method_raw_path_and_query_reach_mlflow_unchanged(client, fake_mlflow, method):
    response = await client.request(method, "/api/2.0/mlflow-artifacts/artifacts/a%2Fb/c%20d.txt?x=1&y=a%2Fb&z=%20&z=2")

    assert response.status_code == 200
    seen = last_call(fake_mlflow)
    assert seen["method"] == method
    assert seen["raw_path"] == "/api/2.0/mlflow-artifacts/artifacts/a%2Fb/c%20d.txt"
    assert seen["query_string"] == "x=1&y=a%2Fb&z=%20&z=2"


async def test_body_with_content_length_arrives_whole_with_the_same_length(client, fake_mlflow):
    body = os.urandom(3 * 1024 * 1024 + 7)

    response = await client.post("/api/2.0/mlflow/runs/log-batch", content=body)

    assert response.status_code == 200
    seen = last_call(fake_mlflow)
    assert seen["framing"] == "content-length"
    assert seen_headers(seen, "content-length") == [str(len(body))]
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


@pytest.mark.parametrize(
    "chunks",
    [
        [b'{"name": ', b'"exp"', b"}"],
        [os.urandom(1024 * 1024) for _ in range(10)],  # beyond the in-memory spool: goes to disk
    ],
    ids=["small", "10MiB"],
)
async def test_chunked_body_arrives_with_a_content_length(client, fake_mlflow, chunks):
    # MLflow's Flask handlers read a chunked body as empty, so the front must send a length.
    async def upload():
        for chunk in chunks:
            yield chunk

    body = b"".join(chunks)
    response = await client.post("/api/2.0/mlflow/experiments/create", content=upload())

    assert response.status_code == 200
    seen = last_call(fake_mlflow)
    assert seen["framing"] == "content-length"
    assert seen_headers(seen, "content-length") == [str(len(body))]
    assert seen_headers(seen, "transfer-encoding") == []
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


# --- request headers ------------------------------------------------------------------------------


async def test_hop_by_hop_request_headers_are_not_forwarded(client, fake_mlflow):
    response = await client.get(
        "/api/2.0/mlflow/experiments/search",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "Authorization": "Bearer end-to-end",
            "X-End-To-End": "kept",
        },
    )

    assert response.status_code == 200
    seen = last_call(fake_mlflow)
    names = {name for name, _ in seen["headers"]}
    assert not names & {"x-drop-me", "keep-alive", "te", "proxy-authorization", "proxy-connection"}
    assert "x-drop-me" not in ",".join(seen_headers(seen, "connection")).lower()
    assert seen_headers(seen, "authorization") == ["Bearer end-to-end"]
    assert seen_headers(seen, "x-end-to-end") == ["kept"]


async def test_front_adds_no_request_headers_of_its_own_http_client(front, fake_mlflow):
    # A bare request must not gain Accept-Encoding (MLflow could then compress for a client that
    # cannot decode), nor the front's User-Agent or Accept.
    await raw_request(front.server.port, f"GET /api/bare HTTP/1.1\r\nHost: {front.host}\r\nConnection: close\r\n\r\n".encode())

    seen = last_call(fake_mlflow)
    names = {name for name, _ in seen["headers"]}
    assert not names & {"accept-encoding", "user-agent", "accept", "cookie"}


async def test_cookies_set_by_mlflow_are_not_replayed_for_other_clients(front, fake_mlflow):
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as first_user:
        response = await first_user.get("/hop-headers")
        assert len(response.headers.get_list("set-cookie")) == 2
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as second_user:
        await second_user.get("/api/2.0/mlflow/experiments/search")

    assert seen_headers(last_call(fake_mlflow), "cookie") == []


async def test_client_cookies_are_forwarded(client, fake_mlflow):
    await client.get("/ajax-api/2.0/mlflow/experiments/search", headers={"Cookie": "session=abc; theme=dark"})

    assert seen_headers(last_call(fake_mlflow), "cookie") == ["session=abc; theme=dark"]


async def test_x_forwarded_headers_are_set_from_the_real_peer_and_host(client, front, fake_mlflow):
    await client.get("/api/2.0/mlflow/experiments/search")

    seen = last_call(fake_mlflow)
    # Without them, MLflow's assistant would take every proxied request for a local one.
    assert seen_headers(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert seen_headers(seen, "x-forwarded-proto") == ["http"]
    assert seen_headers(seen, "x-forwarded-host") == [front.host]


async def test_mlflow_is_sent_its_own_address_as_host(client, fake_mlflow):
    # MLflow's Host check accepts only local names: the public host travels as X-Forwarded-Host.
    await client.get("/api/2.0/mlflow/experiments/search", headers={"X-Forwarded-Host": "team.example.com"})

    assert seen_headers(last_call(fake_mlflow), "host") == [f"127.0.0.1:{fake_mlflow.port}"]


async def test_x_forwarded_for_is_appended_to_the_incoming_chain(client, fake_mlflow):
    await client.get("/api/x", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2"})

    assert seen_headers(last_call(fake_mlflow), "x-forwarded-for") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]


async def test_repeated_x_forwarded_for_headers_are_joined_in_order(client, fake_mlflow):
    await client.get("/api/x", headers=[("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.9")])

    assert seen_headers(last_call(fake_mlflow), "x-forwarded-for") == ["203.0.113.7, 198.51.100.9, 127.0.0.1"]


async def test_platform_x_forwarded_host_and_proto_are_kept(client, fake_mlflow):
    await client.get("/api/x", headers={"X-Forwarded-Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"})

    seen = last_call(fake_mlflow)
    assert seen_headers(seen, "x-forwarded-host") == [PUBLIC_HOST]
    assert seen_headers(seen, "x-forwarded-proto") == ["https"]


async def test_request_id_is_generated_forwarded_and_echoed_when_absent(client, fake_mlflow):
    response = await client.get("/api/x")

    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.match(request_id)
    assert response.headers.get_list("x-request-id") == [request_id]
    assert seen_headers(last_call(fake_mlflow), "x-request-id") == [request_id]


async def test_sane_client_request_id_is_kept(client, fake_mlflow):
    response = await client.get("/api/x", headers={"X-Request-Id": "req-2024.01_a:b"})

    assert response.headers.get_list("x-request-id") == ["req-2024.01_a:b"]
    assert seen_headers(last_call(fake_mlflow), "x-request-id") == ["req-2024.01_a:b"]


@pytest.mark.parametrize("unsafe", ["has spaces in it", "x" * 300, "a;b=c", "a\tb"], ids=["spaces", "300-chars", "semicolon", "tab"])
async def test_unsafe_client_request_id_is_replaced(client, fake_mlflow, unsafe):
    response = await client.get("/api/x", headers={"X-Request-Id": unsafe})

    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.match(request_id)
    assert seen_headers(last_call(fake_mlflow), "x-request-id") == [request_id]


# --- responses ------------------------------------------------------------------------------------


async def test_hop_by_hop_response_headers_are_dropped_and_the_rest_kept(client):
    response = await client.get("/hop-headers")

    assert response.status_code == 200
    assert response.text == "hop done"
    assert "x-custom" not in response.headers
    assert "keep-alive" not in response.headers
    assert "x-custom" not in response.headers.get("connection", "")
    assert len(response.headers.get_list("transfer-encoding")) <= 1  # the front's own framing, once
    assert response.headers["x-end-to-end"] == "kept"


async def test_multiple_set_cookie_headers_are_preserved(client):
    response = await client.get("/hop-headers")

    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


async def test_response_has_a_single_date_header(client):
    # The front's server stamps its own Date; MLflow's must not make a second one.
    response = await client.get("/api/x")

    assert len(response.headers.get_list("date")) == 1


async def test_redirect_to_the_internal_address_points_at_the_public_host(client, front):
    response = await client.get("/redirect/internal")

    assert response.status_code == 302
    assert response.headers["location"] == f"http://{front.host}/x/?next=1"


async def test_redirect_to_the_internal_address_uses_forwarded_host_and_proto(client):
    response = await client.get("/redirect/internal", headers={"X-Forwarded-Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"})

    assert response.headers["location"] == f"https://{PUBLIC_HOST}/x/?next=1"


@pytest.mark.parametrize(
    ("path", "location"),
    [("/redirect/external", "https://login.example.com/x/"), ("/redirect/relative", "/x/")],
    ids=["external", "relative"],
)
async def test_other_redirects_are_untouched(client, path, location):
    response = await client.get(path)

    assert response.headers["location"] == location


async def test_redirect_to_a_port_that_merely_starts_like_mlflows_is_untouched(client, fake_mlflow):
    response = await client.get("/redirect/port-prefix")

    assert response.headers["location"] == f"http://127.0.0.1:{fake_mlflow.port}9/x/"


async def test_server_sent_events_arrive_one_by_one(client):
    events = []
    async with client.stream("GET", "/sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append((time.monotonic(), json.loads(line[len("data:") :])))

    assert [event["i"] for _, event in events] == [0, 1, 2]
    first_arrival, last_sent = events[0][0], events[-1][1]["sent_at"]
    # Buffering would deliver the first event only after the last one was sent.
    assert last_sent - first_arrival > SSE_GAP_SECONDS
    for arrived, event in events:
        assert arrived - event["sent_at"] < SSE_GAP_SECONDS  # not held back until the next one


async def test_compressed_response_passes_through_byte_for_byte(client):
    async with client.stream("GET", "/gzipped", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])

    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(GZIPPED_JSON))
    assert raw == GZIPPED_JSON


async def test_large_download_streams_whole(client):
    expected = hashlib.sha256(bytes(range(256)) * (DOWNLOAD_CHUNK // 256) * 64).hexdigest()
    digest, received = hashlib.sha256(), 0
    async with client.stream("GET", "/download?mib=64") as response:
        assert response.headers["content-length"] == str(64 * DOWNLOAD_CHUNK)
        async for chunk in response.aiter_raw():
            digest.update(chunk)
            received += len(chunk)

    assert received == 64 * DOWNLOAD_CHUNK
    assert digest.hexdigest() == expected


async def test_client_leaving_a_download_midway_releases_mlflow_and_breaks_nothing(client, front, fake_mlflow):
    received = 0
    async with client.stream("GET", "/download?mib=64") as response:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received >= 4 * DOWNLOAD_CHUNK:
                break  # leaving the block closes the connection mid-body

    assert await asyncio.to_thread(fake_mlflow.download_disconnected.wait, 5), "front kept reading from MLflow"
    assert fake_mlflow.download_sent < 64 * DOWNLOAD_CHUNK
    assert (await client.get("/api/x")).status_code == 200
    async with client.stream("GET", "/download?mib=8") as response:
        assert sum([len(chunk) async for chunk in response.aiter_raw()]) == 8 * DOWNLOAD_CHUNK
    assert (await client.get("/health")).status_code == 200


# --- when MLflow cannot answer ----------------------------------------------------------------------


async def test_slow_mlflow_gets_504_at_the_timeout_while_health_stays_fast(client, fake_mlflow):
    started = time.monotonic()
    slow = asyncio.create_task(client.get("/slow"))
    await asyncio.sleep(0.2)
    health_started = time.monotonic()
    health = await client.get("/health")
    health_seconds = time.monotonic() - health_started
    assert not slow.done()
    response = await slow
    elapsed = time.monotonic() - started

    assert_mlflow_error(response, 504, "DEADLINE_EXCEEDED")
    assert UPSTREAM_TIMEOUT * 0.9 <= elapsed < UPSTREAM_TIMEOUT + 1.0
    assert health.status_code == 200
    assert health_seconds < 0.5
    assert await asyncio.to_thread(fake_mlflow.slow_disconnected.wait, 3), "front kept the timed-out request open"


@pytest.mark.parametrize("phase", [UpstreamPhase.STARTING, UpstreamPhase.RESTARTING, UpstreamPhase.STOPPING, UpstreamPhase.DOWN])
async def test_mlflow_not_ready_gets_503_naming_the_phase_without_contacting_it(start_front, fake_mlflow, phase):
    front = start_front(phase=phase)
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        response = await http.post("/api/2.0/mlflow/experiments/create", json={"name": "e"})

    body = assert_mlflow_error(response, 503, "TEMPORARILY_UNAVAILABLE")
    assert phase.value in body["message"]
    assert int(response.headers["retry-after"]) > 0
    assert fake_mlflow.calls == []


async def test_ui_is_served_from_disk_while_mlflow_is_starting(start_front, fake_mlflow):
    front = start_front(phase=UpstreamPhase.STARTING)
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        response = await http.get("/")

    assert response.status_code == 200
    assert "<title>MLflow</title>" in response.text
    assert fake_mlflow.calls == []


async def test_mlflow_port_closed_while_ready_gets_502(start_front):
    front = start_front(base_url=f"http://127.0.0.1:{closed_port()}")
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        response = await http.get("/api/2.0/mlflow/experiments/search")

    assert_mlflow_error(response, 502, "TEMPORARILY_UNAVAILABLE")


# --- Origin and Host ------------------------------------------------------------------------------


async def test_same_origin_write_is_forwarded_without_origin(client, front, fake_mlflow):
    # MLflow would refuse the public origin; the front has already checked it.
    response = await client.post("/ajax-api/2.0/mlflow/experiments/create", json={"name": "e"}, headers={"Origin": f"http://{front.host}"})

    assert response.status_code == 200
    assert seen_headers(last_call(fake_mlflow), "origin") == []


async def test_same_origin_write_behind_the_platform_is_forwarded_without_origin(client, fake_mlflow):
    response = await client.post(
        "/ajax-api/2.0/mlflow/experiments/create",
        json={"name": "e"},
        headers={"Origin": f"https://{PUBLIC_HOST}", "X-Forwarded-Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"},
    )

    assert response.status_code == 200
    assert seen_headers(last_call(fake_mlflow), "origin") == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_foreign_origin_write_is_refused_by_the_front(client, fake_mlflow, method, origin):
    response = await client.request(method, "/ajax-api/2.0/mlflow/experiments/delete", content=b"{}", headers={"Origin": origin})

    assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    assert fake_mlflow.calls == []


async def test_foreign_origin_read_is_forwarded_without_origin(client, fake_mlflow):
    response = await client.get("/ajax-api/2.0/mlflow/experiments/search", headers={"Origin": "https://evil.example"})

    assert response.status_code == 200
    assert seen_headers(last_call(fake_mlflow), "origin") == []


async def test_configured_origin_write_is_forwarded_with_origin(start_front, fake_mlflow):
    policy = EdgePolicy(allowed_origins=("https://notebooks.example.com",))
    front = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, edge_policy=policy))
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as http:
        response = await http.post("/api/2.0/mlflow/experiments/create", json={"name": "e"}, headers={"Origin": "https://notebooks.example.com"})

    assert response.status_code == 200
    assert seen_headers(last_call(fake_mlflow), "origin") == ["https://notebooks.example.com"]


async def test_loopback_origin_write_is_forwarded_with_origin(client, fake_mlflow):
    # A UI dev server on localhost: MLflow itself accepts it and answers with CORS headers.
    response = await client.post("/ajax-api/2.0/mlflow/runs/create", json={}, headers={"Origin": "http://localhost:3000"})

    assert response.status_code == 200
    assert seen_headers(last_call(fake_mlflow), "origin") == ["http://localhost:3000"]


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/experiments/search", "/", "/static-files/main.js"], ids=["proxied", "index", "static"])
async def test_unknown_host_is_refused_on_every_path_but_health(client, fake_mlflow, path):
    response = await client.get(path, headers={"Host": "attacker.example"})

    assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    assert fake_mlflow.calls == []


async def test_health_answers_whatever_the_host(client):
    response = await client.get("/health", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code == 200
    response = await client.get("/health", headers={"Host": "attacker.example"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/experiments/search", "/"], ids=["proxied", "index"])
async def test_databricks_apps_hosts_are_allowed_by_default(client, path):
    response = await client.get(path, headers={"Host": PUBLIC_HOST})

    assert response.status_code == 200


async def test_two_host_headers_are_refused_with_400(front, fake_mlflow):
    # The first is ours, the second foreign: whichever one a later reader picks, refuse both.
    answer = await raw_request(
        front.server.port,
        f"GET /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: {front.host}\r\nHost: attacker.example\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"error_code":"BAD_REQUEST"' in answer and b"more than one Host header" in answer
    assert fake_mlflow.calls == []


@pytest.mark.parametrize("value", [b"J\xc3\xbcrgen M\xc3\xbcller", b"a\x85b", b"\xff\xfe"])
async def test_header_values_with_non_ascii_bytes_reach_mlflow_byte_for_byte(front, fake_mlflow, value):
    # The platform may send a UTF-8 user name; header bytes above 0x7f are legal (obs-text).
    answer = await raw_request(
        front.server.port,
        b"GET /echo HTTP/1.1\r\nHost: " + front.host.encode() + b"\r\nX-Forwarded-Preferred-Username: " + value + b"\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    seen = seen_headers(last_call(fake_mlflow), "x-forwarded-preferred-username")
    assert [v.encode("latin-1") for v in seen] == [value]


@pytest.mark.parametrize(
    ("request_line", "status", "error_code"),
    [
        (b"GET /api/x%0d%0ay HTTP/1.1", 404, "RESOURCE_DOES_NOT_EXIST"),  # no route matches a line break
        (b"PROPFIND /api/2.0/mlflow/experiments/search HTTP/1.1", 405, "BAD_REQUEST"),
        (b"TRACE / HTTP/1.1", 405, "BAD_REQUEST"),
    ],
)
async def test_routing_refusals_are_in_mlflows_shape(front, fake_mlflow, request_line, status, error_code):
    answer = await raw_request(front.server.port, request_line + b"\r\nHost: " + front.host.encode() + b"\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert json.loads(body)["error_code"] == error_code
    assert fake_mlflow.calls == []


@pytest.mark.parametrize("padding", [b" ", b"\t", b"  \t "])
async def test_trailing_whitespace_in_a_header_value_is_trimmed_not_a_502(front, fake_mlflow, padding):
    # RFC 9110 §5.5: whitespace around a field value is not part of it. A client that sends some
    # once got a false 502 ("MLflow closed the connection"): its HTTP client refused to send it.
    answer = await raw_request(
        front.server.port,
        b"GET /echo HTTP/1.1\r\nHost: " + front.host.encode() + b"\r\nX-Team: ml" + padding + b"\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert seen_headers(last_call(fake_mlflow), "x-team") == ["ml"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_health_in_any_other_method_is_answered_by_the_front(client, fake_mlflow, method):
    response = await client.request(method, "/health")

    assert response.status_code == 405
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert fake_mlflow.calls == []  # never MLflow's business


FORWARDED_CLAIMS = {
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Email": "mallory@evil.example",
    "X-Forwarded-User": "mallory",
    "X-Forwarded-Preferred-Username": "mallory",
    "X-Forwarded-Access-Token": "forged",
    "X-Real-Ip": "203.0.113.7",
    "Forwarded": "for=203.0.113.7;host=evil.example",
}


async def test_forwarded_headers_from_a_peer_that_is_no_configured_proxy_are_replaced(start_front, fake_mlflow):
    # Only 10.9.9.9 is a proxy here: the test client (127.0.0.1) is an ordinary client.
    untrusting = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, trusted_proxies=("10.9.9.9",)))
    async with httpx.AsyncClient(base_url=untrusting.url, timeout=10, trust_env=False) as session:
        await session.get("/api/x", headers=FORWARDED_CLAIMS)

    seen = last_call(fake_mlflow)
    assert seen_headers(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert seen_headers(seen, "x-forwarded-proto") == ["http"]
    assert seen_headers(seen, "x-forwarded-host") == [untrusting.host]
    for name in ("x-forwarded-email", "x-forwarded-user", "x-forwarded-preferred-username", "x-forwarded-access-token", "x-real-ip", "forwarded"):
        assert seen_headers(seen, name) == [], name


async def test_forwarded_headers_from_a_configured_proxy_are_kept(client, fake_mlflow):
    await client.get("/api/x", headers=FORWARDED_CLAIMS)

    seen = last_call(fake_mlflow)
    assert seen_headers(seen, "x-forwarded-email") == ["mallory@evil.example"]
    assert seen_headers(seen, "x-real-ip") == ["203.0.113.7"]
    assert seen_headers(seen, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]


async def test_the_users_access_token_never_reaches_mlflow(client, fake_mlflow):
    await client.get("/api/x", headers={"X-Forwarded-Access-Token": "eyJuser.token", "X-Forwarded-Email": "a@example.com"})

    seen = last_call(fake_mlflow)
    assert seen_headers(seen, "x-forwarded-access-token") == []
    assert seen_headers(seen, "x-forwarded-email") == ["a@example.com"]


async def test_a_proxys_x_real_ip_starts_the_forwarded_chain(client, fake_mlflow):
    await client.get("/api/x", headers={"X-Real-Ip": "198.51.100.4"})

    assert seen_headers(last_call(fake_mlflow), "x-forwarded-for") == ["198.51.100.4, 127.0.0.1"]


async def test_a_public_scheme_is_assumed_where_the_proxy_sends_none(start_front, fake_mlflow):
    # Databricks Apps ends TLS and sends no X-Forwarded-Proto: a redirect must still say https.
    front = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, public_scheme="https"))
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as session:
        response = await session.get("/redirect/internal", headers={"X-Forwarded-Host": PUBLIC_HOST})
        await session.get("/api/x")

    assert response.headers["location"] == f"https://{PUBLIC_HOST}/x/?next=1"
    assert seen_headers(last_call(fake_mlflow), "x-forwarded-proto") == ["https"]


async def test_mlflow_server_header_is_not_passed_on(client):
    response = await client.get("/api/x")
    assert "server" not in response.headers
