"""BoundedHttpToolsProtocol on a real uvicorn server: oversized and slow request heads are refused,
everything else is served as uvicorn would."""

from __future__ import annotations

import json
import socket
import time

import pytest

from launcher.http_protocol import BoundedHttpToolsProtocol
from tests.threaded_server import ThreadedServer


class SmallLimits(BoundedHttpToolsProtocol):
    max_target_bytes = 1024
    max_head_bytes = 4096
    max_header_fields = 10
    head_timeout_seconds = 0.5


CALLED: list[str] = []  # the paths the app was started for


async def echo(scope, receive, send) -> None:
    """Answers with what it received: path, header count and body length."""
    CALLED.append(scope["path"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps({"path": scope["path"], "headers": len(scope["headers"]), "body": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server():
    running = ThreadedServer(echo, name="echo", http=SmallLimits, ws="none", timeout_keep_alive=5).start()
    try:
        yield running
    finally:
        running.stop()


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length: the head and the body may come in separate reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def exchange(server, *pieces: bytes, pause: float = 0.0) -> bytes:
    """Send `pieces` (pausing between them), then read until the server closes."""
    with connect(server) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused mid-way: the answer is already waiting
            time.sleep(pause)
        return read_all(sock)


def status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body else {}


def request(target: bytes = b"/x", headers: list[bytes] = (), body: bytes = b"") -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: t", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_an_ordinary_request_is_served(server):
    status, body = status_and_body(exchange(server, request(body=b"hello")))
    assert (status, body) == (200, {"path": "/x", "headers": 3, "body": 5})


def test_url_at_the_limit_passes_and_over_it_gets_414(server):
    at_limit = b"/" + b"a" * (SmallLimits.max_target_bytes - 1)
    assert status_and_body(exchange(server, request(at_limit)))[0] == 200
    status, body = status_and_body(exchange(server, request(at_limit + b"a")))
    assert status == 414
    assert body == {"error_code": "BAD_REQUEST", "message": "The request's URL exceeds 1024 bytes."}


def test_too_many_header_fields_get_431(server):
    assert status_and_body(exchange(server, request(headers=[b"X-%d: v" % i for i in range(8)])))[0] == 200  # 10 in all
    status, body = status_and_body(exchange(server, request(headers=[b"X-%d: v" % i for i in range(9)])))
    assert status == 431 and "more than 10 header fields" in body["message"]


def test_headers_over_the_byte_limit_get_431(server):
    status, body = status_and_body(exchange(server, request(headers=[b"X-Big: " + b"a" * 5000])))
    assert status == 431 and "exceed 4096 bytes" in body["message"]


def test_a_header_that_never_ends_is_refused_before_it_ends(server):
    with connect(server) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        answer = b""
        while sent < 1_000_000 and not answer:
            try:
                sock.sendall(b"a" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1024
            sock.settimeout(0.01)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                pass
        sock.settimeout(5)
        answer += read_all(sock)
    assert status_and_body(answer)[0] == 431
    assert sent < 64 * 1024  # refused after a few KiB, not after the megabyte


def test_a_head_in_many_small_pieces_under_the_limit_is_served(server):
    # The bytes are counted once, whether the parser has handed them over yet or not.
    whole = request(headers=[b"X-Pad: " + b"p" * 3000])
    pieces = [whole[i : i + 100] for i in range(0, len(whole), 100)]
    assert status_and_body(exchange(server, *pieces, pause=0.001))[0] == 200


def test_a_large_body_after_a_small_head_in_one_write_is_served(server):
    status, body = status_and_body(exchange(server, request(body=b"b" * 200_000)))
    assert (status, body["body"]) == (200, 200_000)


def test_a_head_too_slow_to_arrive_gets_408(server):
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n")
        raw = read_all(sock)
    assert status_and_body(raw)[0] == 408
    assert time.monotonic() - started < 5


def test_a_connection_that_never_sends_anything_is_closed_without_an_answer(server):
    with connect(server) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 3


def test_keep_alive_and_pipelining_still_work_past_the_head_timeout(server):
    one = b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n"
    two = b"GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(one)
        first = read_one_response(sock)
        time.sleep(SmallLimits.head_timeout_seconds * 2)  # idle between requests: keep-alive's business
        sock.sendall(one + two)
        rest = read_all(sock)
    assert b'"/one"' in first and rest.count(b"HTTP/1.1 200") == 2 and b'"/two"' in rest


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
        b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /x\x00y HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Header: v\r\n\r\n",
    ],
    ids=["tls", "cl-and-te", "nul-in-target", "space-in-name"],
)
def test_what_the_parser_rejects_gets_400_json(server, raw):
    status, body = status_and_body(exchange(server, raw))
    assert status == 400
    assert body["error_code"] == "BAD_REQUEST"


def test_an_upgrade_request_is_answered_as_plain_http(server):
    raw = exchange(server, b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n")
    assert status_and_body(raw)[0] == 200


@pytest.mark.parametrize(
    "coding",
    [b"identity", b"gzip", b"gzip, chunked", b"chunked, chunked", b"deflate"],
)
def test_a_transfer_coding_other_than_chunked_is_refused_before_the_app_runs(server, coding):
    path = f"/te-{coding.decode().replace(', ', '-')}"
    raw = exchange(server, f"DELETE {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ".encode() + coding + b"\r\n\r\n0\r\n\r\n")
    status, body = status_and_body(raw)
    assert status == 400 and body["error_code"] == "BAD_REQUEST"  # ours, or llhttp's own for some
    time.sleep(0.1)
    assert path not in CALLED  # never started: nothing behind the front executes it


def test_two_transfer_encoding_headers_are_refused_before_the_app_runs(server):
    raw = exchange(server, b"POST /te-twice HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_and_body(raw)[0] == 400
    time.sleep(0.1)
    assert "/te-twice" not in CALLED


def test_chunked_alone_is_served(server):
    raw = exchange(server, b"POST /te-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    status, body = status_and_body(raw)
    assert (status, body["body"]) == (200, 3)
