"""Hostile input against the real app, as raw bytes where a client library would tidy it up:
oversized heads, request smuggling, log forging, traversal with NUL and absolute paths, spoofed
Host and Origin. Each answer is a 4xx in MLflow's shape (or MLflow's own), quickly, and the app
stays healthy."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import httpx
import pytest

from tests.raw_http import exchange

pytestmark = pytest.mark.e2e
QUICK_SECONDS = 3.0
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +(front|mlflow) +\| ")


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def request(target: str | bytes, *headers: bytes | str, method: bytes = b"GET", body: bytes = b"") -> bytes:
    target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [h.encode("latin-1") if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_healthy(app) -> None:
    health = app.health()
    assert health is not None and health.status_code == 200, health and health.text


def experiment_exists(app, name: str) -> bool:
    found = httpx.get(f"{app.url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    assert found.status_code in (200, 404), found.text
    return found.status_code == 200


# --- oversized heads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (request("/api/2.0/mlflow/experiments/search", b"X-Big: " + b"a" * 100_000), 431),
        (request("/", b"X-Big: " + b"a" * 10_000_000), 431),
        (request("/api/2.0/mlflow/experiments/search", *(b"X-H%d: v" % i for i in range(10_000))), 431),
        (request("/api/2.0/mlflow/experiments/search?x=" + "a" * 100_000), 414),
        (request("/static-files/" + "a" * 100_000), 414),
        (request("/api/2.0/mlflow/experiments/search", *(b"Cookie: c%d=%s" % (i, b"v" * 1000) for i in range(70))), 431),
    ],
    ids=["100KB-header", "10MB-header", "10000-headers", "100KB-url", "100KB-asset-url", "70KB-of-cookies"],
)
def test_oversized_heads_get_a_quick_4xx_and_the_app_stays_healthy(app, data, status):
    answer, seconds = exchange(app.port, data)
    got, headers, body = parse(answer)
    assert got == status, answer[:300]
    assert seconds < QUICK_SECONDS
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error_code"] == "BAD_REQUEST"
    assert_healthy(app)


def test_heads_within_the_limits_are_served(app):
    # What real clients send stays well inside: a long query, big cookies, many headers.
    query = "&".join(f"run_ids={uuid.uuid4().hex}" for _ in range(200))  # ~ 8 KiB
    answer, _ = exchange(
        app.port,
        request(
            f"/api/2.0/mlflow/experiments/search?max_results=1&{query}",
            b"Cookie: " + b"c=" + b"v" * 8000,
            *(b"X-Extra-%d: v" % i for i in range(100)),
        ),
    )
    assert parse(answer)[0] == 200, answer[:300]


def test_a_slow_head_does_not_hold_up_other_requests(app):
    with socket.create_connection(("127.0.0.1", app.port)) as slow:
        slow.sendall(b"GET /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        assert_healthy(app)
        assert httpx.get(f"{app.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}).status_code == 200
        assert time.monotonic() - started < QUICK_SECONDS


# --- request smuggling -------------------------------------------------------------------------


def smuggling_cases(name: str) -> dict[str, bytes]:
    payload = json.dumps({"name": name}).encode()
    inner = b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    chunked_inner = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    outer = b"POST /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    hidden = b"0\r\n\r\n" + inner  # chunked: an empty body, then "the next request"
    return {
        "CL.TE": outer + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s" % (len(hidden), hidden),
        "TE.CL": outer + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n%s" % chunked_inner,
        "TE-space-before-colon": outer + b"Content-Length: %d\r\nTransfer-Encoding : chunked\r\n\r\n%s" % (len(hidden), hidden),
        "TE-xchunked": outer + b"Content-Length: %d\r\nTransfer-Encoding: xchunked\r\n\r\n%s" % (len(hidden), hidden),
        "TE-chunked-identity": outer + b"Content-Length: %d\r\nTransfer-Encoding: chunked, identity\r\n\r\n%s" % (len(hidden), hidden),
        "TE-tab": outer + b"Content-Length: %d\r\nTransfer-Encoding:\tchunked\r\n\r\n%s" % (len(hidden), hidden),
        "TE-twice": outer + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n%s" % hidden,
        "CL-twice": outer + b"Content-Length: 2\r\nContent-Length: %d\r\n\r\n{}%s" % (len(inner) + 2, inner),
        "CL-list": outer + b"Content-Length: 2, %d\r\n\r\n{}%s" % (len(inner) + 2, inner),
        "CL-plus": outer + b"Content-Length: +2\r\n\r\n{}%s" % inner,
        "CL-negative": outer + b"Content-Length: -1\r\n\r\n{}%s" % inner,
    }


@pytest.mark.parametrize("case", list(smuggling_cases("x")))
def test_conflicting_framing_never_smuggles_a_second_request(app, case):
    name = f"smuggled-{case}-{uuid.uuid4().hex[:8]}"
    answer, seconds = exchange(app.port, smuggling_cases(name)[case])
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [400], answer[:300]  # llhttp, strict: one answer, and the connection closed
    assert seconds < QUICK_SECONDS
    assert not experiment_exists(app, name), f"{case}: the hidden request was executed ({statuses})"
    assert_healthy(app)


# --- log forging ---------------------------------------------------------------------------------


def log_lines_with(app, marker: str, wait: float = 5.0) -> list[str]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        lines = [line for line in app.log_text().splitlines() if marker in line]
        if lines:
            return lines
        time.sleep(0.1)
    return []


def test_crafted_paths_and_headers_cannot_forge_or_split_log_lines(app):
    marker = uuid.uuid4().hex[:10]
    fake = f"12:00:00 INFO    front  | FORGED-{marker}".replace(" ", "%20").replace("|", "%7C")
    reaches_the_app = [
        # Encoded CR LF and a whole fake log line in the path, to MLflow and to the UI.
        request(f"/api/2.0/mlflow/experiments/get%0d%0a{fake}?experiment_id=1"),
        request(f"/static-files/x%0a{fake}"),
        request(f"/x%0a{fake}"),
        # ANSI escapes (clear screen, colours, a terminal title) and C1 controls in the path.
        request(f"/no-such-{marker}%1b%5b2J%1b%5b31mANSI%1b%5d0%3bpwned%07%c2%85NEL"),
        # Bytes above 0x7f are legal in header values (NEL, a UTF-8 line separator): logged escaped.
        request(f"/api/2.0/mlflow/experiments/search?marker={marker}", f"X-Forwarded-Email: {marker}\x85NEL@evil.example".encode("latin-1")),
        request(f"/api/2.0/mlflow/experiments/search?marker={marker}", b"X-Forwarded-Email: " + marker.encode() + "\u2028LS".encode()),
        # A request id that is not a sane token is replaced; a sane one is kept.
        request("/api/2.0/mlflow/experiments/search", f"X-Request-Id: {marker}-FORGED%0aid"),
        request("/api/2.0/mlflow/experiments/search", f"X-Request-Id: {marker}-ok"),
    ]
    for data in reaches_the_app:
        status, _, body = parse(exchange(app.port, data)[0])
        assert status < 500, (data[:120], body)
        assert b"Traceback" not in body
    refused_by_the_parser = [
        # Control characters in header values, bare CR and bare LF: never parsed as a request.
        request("/api/2.0/mlflow/experiments/search", f"X-Forwarded-Email: {marker}\x1b[2J\x1b[31m@evil.example"),
        request("/api/2.0/mlflow/experiments/search", f"X-Forwarded-Email: {marker}-del\x7f@evil.example"),
        request("/api/2.0/mlflow/experiments/search", f"X-Request-Id: {marker}\x1b[31mred"),
        request("/api/2.0/mlflow/experiments/search", f"X-Forwarded-Email: {marker}\rFORGED-{marker}"),
        request("/api/2.0/mlflow/experiments/search", f"X-Forwarded-Email: {marker}\nFORGED-{marker}: x"),
        request(f"/raw-{marker}\x1b[31m"),
    ]
    for data in refused_by_the_parser:
        status, _, body = parse(exchange(app.port, data)[0])
        assert status == 400 and json.loads(body)["error_code"] == "BAD_REQUEST", data[:120]

    assert log_lines_with(app, f"id={marker}-ok"), "the requests should be logged"
    time.sleep(0.5)  # MLflow's access lines come a little later
    log = app.log_text()
    for control in ("\x1b", "\x07", "\x7f", "\r", "\x80", "\x85"):
        assert control not in log, repr(control)
    for line in log.splitlines():
        if marker in line or "FORGED" in line:
            assert LOG_LINE.match(line), f"a line was split or forged: {line!r}"
    assert f"id={marker}-FORGED" not in log
    assert f"user={marker}\\x85NEL@evil.example" in log  # the C1 control, escaped
    assert f"user={marker}\u00e2\\x80\u00a8LS" in log  # UTF-8 read as latin-1: its C1 byte escaped


# --- static assets: NUL, absolute and encoded paths ---------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/static-files/%00",
        b"/static-files/index.html%00",
        b"/static-files/%2Fetc%2Fpasswd",
        b"/static-files/%2F%2Fetc/passwd",
        b"/static-files/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        b"/static-files/%252e%252e/%252e%252e/etc/passwd",
        b"/static-files/..%5C..%5C..%5Cetc%5Cpasswd",
        b"/static-files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        b"/static-files/file:///etc/passwd",
        b"/static-files/C:%5CWindows%5Cwin.ini",
        b"/static-files/static/js/../../../../../../proc/self/environ",
        b"/static-files/%2e%2e/%2e%2e/%2e%2e/proc/self/environ",
    ],
)
def test_asset_paths_with_nul_absolute_or_encoded_parts_get_404(app, target):
    status, headers, body = parse(exchange(app.port, request(target))[0])
    assert status == 404, (target, body[:200])
    assert json.loads(body)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert b"root:" not in body and b"PATH=" not in body


@pytest.mark.parametrize("target", [b"/static-files/index.html\x00.js", b"/static-files/\x00", b"/static-files/a b"])
def test_raw_nul_and_space_in_the_request_line_get_400(app, target):
    status, _, body = parse(exchange(app.port, request(target))[0])
    assert status == 400 and json.loads(body)["error_code"] == "BAD_REQUEST"


# --- Host and Origin spoofing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1@attacker.example", "attacker.example:80@127.0.0.1", "localhost.attacker.example", "127.0.0.1.nip.io",
     "10.0.0.1.attacker.example", "0x7f.0.0.1", "2130706433", "", "127.0.0.1 attacker.example"],
)  # fmt: skip
def test_spoofed_host_names_are_refused(app, host):
    data = b"GET /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode()
    status, _, body = parse(exchange(app.port, data)[0])
    assert status in (400, 403), (host, body)
    assert json.loads(body)["error_code"] in ("PERMISSION_DENIED", "BAD_REQUEST")


def test_a_second_host_header_is_refused(app):
    data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n"
    status, _, body = parse(exchange(app.port, data)[0])
    assert status == 400 and b"more than one Host" in body


@pytest.mark.parametrize(
    "origin",
    ["null", "https://attacker.example", "http://127.0.0.1:1.attacker.example", "http://127.0.0.1@attacker.example",
     "http://localhost.attacker.example", "file://", "http://127.0.0.1.nip.io"],
)  # fmt: skip
def test_spoofed_origins_cannot_write(app, origin):
    name = f"origin-spoof-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{app.url}/ajax-api/2.0/mlflow/experiments/create", json={"name": name}, headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "PERMISSION_DENIED"
    assert not experiment_exists(app, name)


def test_a_foreign_page_gets_no_cors_grant_to_send_forwarding_headers(app):
    # X-Forwarded-Host names the public host; a page could only send it after this preflight,
    # and the preflight grants nothing, so no browser can make its origin look like ours.
    preflight = httpx.options(
        f"{app.url}/ajax-api/2.0/mlflow/experiments/create",
        headers={
            "Origin": "https://attacker.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-forwarded-host, content-type",
        },
    )
    assert preflight.status_code < 500
    assert "access-control-allow-origin" not in preflight.headers
    assert "x-forwarded-host" not in preflight.headers.get("access-control-allow-headers", "").lower()


# --- MLflow's own errors pass through unchanged ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"name": ', b"\xff\xfe\x00garbage", b"[]", b'{"name": 42}', b"", b'{"name": "' + b"x" * 100 + b'"'],
)
def test_malformed_json_gets_mlflows_own_400_byte_for_byte(app, body):
    headers = {"Content-Type": "application/json"}
    through_front = httpx.post(f"{app.url}/api/2.0/mlflow/experiments/create", content=body, headers=headers)
    with app.mlflow_client() as mlflow:
        direct = mlflow.post("/api/2.0/mlflow/experiments/create", content=body, headers=headers)
    assert through_front.status_code == direct.status_code >= 400  # MLflow answers `[]` with its own 500
    assert through_front.content == direct.content
    assert through_front.headers["content-type"] == direct.headers["content-type"]
