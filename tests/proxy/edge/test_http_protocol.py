"""BoundedHttpToolsProtocol on a real uvicorn server: oversized and slow request heads are refused,
a stalled or trickling body gets 408, a client that stops reading is cut off, and everything else
is served as uvicorn would."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from proxy.edge.http_protocol import UVICORN_CHECKED, BoundedHttpToolsProtocol, untested_uvicorn
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


def serving(app, name: str, protocol):
    """`app` on a uvicorn of its own with `protocol`, for a module's tests."""
    running = ThreadedServer(app, name=name, http=protocol, ws="none", timeout_keep_alive=5).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server():
    yield from serving(echo, "echo", SmallLimits)


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


# --- the uvicorn internals proxy/edge/http_protocol.py relies on ------------------------------------------


def test_another_uvicorn_release_is_refused_at_import_in_one_line():
    """In a fresh interpreter, as the front would import it; the version is made to read 0.55.0."""
    import subprocess
    import sys

    probe = "import importlib.metadata as m; real = m.version;m.version = lambda name: '0.55.0' if name == 'uvicorn' else real(name);import proxy.edge.http_protocol"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "proxy.edge.http_protocol.UntestedUvicorn: mlflow-app's front HTTP edge was tested with uvicorn 0.54; installed: 0.55.0. "
        "Install uvicorn==0.54.* or an mlflow-app release made for 0.55.0."
    )
    assert untested_uvicorn("0.54.0") is None and untested_uvicorn("0.54.7") is None
    assert untested_uvicorn("0.5.4") and untested_uvicorn("1.54.0")


def test_the_uvicorn_internals_the_protocol_relies_on_are_there():
    """Named in proxy/edge/http_protocol.py's docstring; the behaviour behind each is held by the tests
    around this one. A failure here means reading uvicorn's httptools_impl.py again."""
    import uvicorn
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    assert uvicorn.__version__.startswith(UVICORN_CHECKED + "."), f"read against uvicorn {UVICORN_CHECKED}"
    for name in (
        "on_message_begin",
        "on_url",
        "on_headers_complete",
        "data_received",
        "connection_made",
        "connection_lost",
        "pause_writing",
        "send_400_response",
        "shutdown",
        "_unsupported_upgrade_warning",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name

    class Transport:
        paused = False

        def pause_reading(self):
            self.paused = True

        def resume_reading(self):
            self.paused = False

    flow = FlowControl(Transport())
    assert (flow.read_paused, flow.write_paused) == (False, False)
    flow.pause_reading()
    flow.pause_writing()
    assert (flow.read_paused, flow.write_paused) == (True, True)

    cycle = RequestResponseCycle(
        scope={"type": "http"},
        transport=Transport(),
        flow=flow,
        logger=None,
        access_logger=None,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=True,
        keep_alive=True,
        on_response=lambda: None,
    )
    assert (cycle.body, cycle.more_body, cycle.disconnected, cycle.waiting_for_100_continue) == (bytearray(), True, False, True)
    assert (cycle.response_started, cycle.response_complete, cycle.scope) == (False, False, {"type": "http"})
    assert isinstance(cycle.message_event, asyncio.Event) and isinstance(cycle.transport, Transport)


# --- slow clients: a body that stalls or trickles, a client that stops reading ---------------------------

IDLE = 0.5


class SlowClientLimits(BoundedHttpToolsProtocol.with_limits(client_idle_seconds=IDLE, client_min_bytes_per_second=1000)):
    """Counts how often the stall timer is armed, to show which requests cost one."""

    arms = 0

    def _arm_stall_timer(self) -> None:
        SlowClientLimits.arms += 1
        super()._arm_stall_timer()


SEEN: dict[str, dict] = {}  # per path: the messages the app received, what it sent, the scope's cut-off mark


async def slow_client_app(scope, receive, send) -> None:
    """Reads the body (after `?wait` seconds), answers with its length; /stream/…?MiB streams that
    much (64 MiB by default); /early/… starts its answer before reading."""
    path = scope["path"]
    seen = SEEN[path] = {"messages": [], "sent": 0, "done": False}

    def mark() -> None:
        seen["cut_off"] = scope.get("extensions", {}).get("mlflow_app.cut_off")

    if path.startswith("/stream/"):
        await receive()  # a GET: the whole request came with its head
        watcher = asyncio.get_running_loop().create_task(receive())  # returns when the client is gone
        size = int(scope["query_string"] or 64) << 20
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]})
        chunk = b"s" * 65536
        while seen["sent"] < size and not watcher.done():
            seen["sent"] += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": seen["sent"] < size})
        seen["messages"].append((await watcher)["type"])  # at once, once the answer is complete
        mark()
        seen["done"] = True
        return
    if path.startswith("/early/"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"begun", "more_body": True})
    if scope["query_string"]:
        await asyncio.sleep(float(scope["query_string"]))
    length = 0
    while True:
        message = await receive()
        seen["messages"].append(message["type"])
        if message["type"] == "http.disconnect":
            mark()
            seen["done"] = True
            return
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    answer = json.dumps({"body": length}).encode()
    if not path.startswith("/early/"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})
    seen["done"] = True


@pytest.fixture(scope="module")
def slow_server():
    yield from serving(slow_client_app, "slow-clients", SlowClientLimits)


def head(path: str, length: int, *extra: bytes) -> bytes:
    return b"\r\n".join([b"POST " + path.encode() + b" HTTP/1.1", b"Host: t", b"Content-Length: %d" % length, *extra]) + b"\r\n\r\n"


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_with_limits_makes_a_subclass_with_those_limits():
    made = BoundedHttpToolsProtocol.with_limits(client_idle_seconds=7, client_min_bytes_per_second=0)
    assert issubclass(made, BoundedHttpToolsProtocol) and made is not BoundedHttpToolsProtocol
    assert (made.client_idle_seconds, made.client_min_bytes_per_second) == (7.0, 0)
    assert made.head_timeout_seconds == BoundedHttpToolsProtocol.head_timeout_seconds
    assert BoundedHttpToolsProtocol.client_idle_seconds == 60.0  # the defaults are untouched
    assert BoundedHttpToolsProtocol.client_min_bytes_per_second == 1024
    assert made.with_limits(client_min_bytes_per_second=5).client_idle_seconds == 7.0
    for bad in ({"client_idle_seconds": 0}, {"client_idle_seconds": -1}, {"client_min_bytes_per_second": -1}):
        with pytest.raises(ValueError):
            BoundedHttpToolsProtocol.with_limits(**bad)


def test_a_body_that_stops_arriving_gets_408_and_the_app_sees_a_disconnect(slow_server):
    started = time.monotonic()
    raw = exchange(slow_server, head("/stalled", 1000) + b"0123456789")
    elapsed = time.monotonic() - started
    status, body = status_and_body(raw)
    assert status == 408
    assert body == {"error_code": "BAD_REQUEST", "message": "The request's body stopped arriving: no bytes for 0.5 s."}
    assert b"\r\nconnection: close\r\n" in raw.partition(b"\r\n\r\n")[0].lower() + b"\r\n"
    assert IDLE <= elapsed < IDLE + 1.5
    assert wait_for(lambda: SEEN["/stalled"]["done"])
    assert SEEN["/stalled"]["messages"] == ["http.request", "http.disconnect"]
    assert SEEN["/stalled"]["cut_off"] == 408  # for the request log: what the client got


def test_a_body_trickling_under_the_minimum_rate_gets_408(slow_server):
    started = time.monotonic()
    with connect(slow_server) as sock:
        sock.sendall(head("/trickle", 100))
        sock.settimeout(0.2)
        answer = b""
        for _ in range(50):  # one byte every 0.2 s: never idle for 0.5 s, but 5 bytes/s
            try:
                sock.sendall(b"t")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                pass
            break
        sock.settimeout(5)
        answer += read_all(sock)
    status, body = status_and_body(answer)
    assert status == 408 and "too slowly" in body["message"] and "1000 bytes/s required" in body["message"]
    assert time.monotonic() - started < IDLE + 1.5
    assert wait_for(lambda: SEEN["/trickle"]["done"]) and SEEN["/trickle"]["messages"][-1] == "http.disconnect"


def test_a_slow_but_steady_body_within_the_limits_is_served(slow_server):
    pieces = [b"b" * 400] * 20  # 400 bytes every 0.1 s: 4000 bytes/s for 2 s, four idle limits
    raw = exchange(slow_server, head("/steady", 8000, b"Connection: close"), *pieces, pause=0.1)
    assert status_and_body(raw) == (200, {"body": 8000})


def test_a_request_whose_body_comes_with_its_head_arms_no_timer(slow_server):
    with connect(slow_server) as sock:
        before = SlowClientLimits.arms
        for i in range(20):
            sock.sendall(head(f"/whole/{i}", 5000) + b"w" * 5000)
            assert status_and_body(read_one_response(sock)) == (200, {"body": 5000})
            sock.sendall(b"GET /whole/get HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status_and_body(read_one_response(sock))[0] == 200
        assert SlowClientLimits.arms == before
        # A body sent after its head is watched: one timer, which stops once the body is whole.
        sock.sendall(head("/split", 5))
        time.sleep(0.05)
        sock.sendall(b"abcde")
        assert status_and_body(read_one_response(sock)) == (200, {"body": 5})
        assert SlowClientLimits.arms == before + 1
        time.sleep(IDLE)
        assert SlowClientLimits.arms == before + 1  # disarmed at its first look: nothing owed


def test_time_the_app_does_not_read_is_not_counted_against_the_client(slow_server):
    # 1 MiB sent at once: uvicorn stops reading past 64 KiB while the app waits three idle limits.
    raw = exchange(slow_server, head("/late?1.5", 1 << 20, b"Connection: close") + b"l" * (1 << 20))
    assert status_and_body(raw) == (200, {"body": 1 << 20})


def test_a_client_waiting_for_100_continue_is_not_counted_as_slow(slow_server):
    with connect(slow_server) as sock:
        sock.sendall(head("/continue?1.5", 10, b"Expect: 100-continue", b"Connection: close"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")  # sent when the app reads, 1.5 s on
        sock.sendall(b"0123456789")
        assert status_and_body(read_all(sock)) == (200, {"body": 10})


def test_a_body_that_stalls_after_the_answer_began_ends_the_connection(slow_server):
    started = time.monotonic()
    with connect(slow_server) as sock:
        sock.sendall(head("/early/stalled", 1000) + b"0123456789")
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200 ") and b"408" not in raw  # no second status line
    assert time.monotonic() - started < IDLE + 1.5
    assert wait_for(lambda: SEEN["/early/stalled"]["done"])
    assert SEEN["/early/stalled"]["messages"] == ["http.request", "http.disconnect"]
    assert SEEN["/early/stalled"]["cut_off"] == 200  # the status the client had got


def test_a_client_that_stops_reading_is_cut_off_and_the_app_released(slow_server):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.settimeout(5)
    with sock:
        sock.connect(("127.0.0.1", slow_server.port))
        started = time.monotonic()
        sock.sendall(b"GET /stream/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_for(lambda: SEEN.get("/stream/1", {}).get("done"), IDLE + 3)
        elapsed = time.monotonic() - started
        received = len(read_all(sock))  # what was already on its way, then the end
    seen = SEEN["/stream/1"]
    assert IDLE <= elapsed < IDLE + 2
    assert seen["messages"] == ["http.disconnect"] and seen["sent"] < 64 * 1024 * 1024
    assert seen["cut_off"] == 200
    assert received < seen["sent"]


def test_a_client_that_reads_slowly_but_steadily_is_served_whole(slow_server):
    with connect(slow_server) as sock:
        sock.sendall(b"GET /stream/2?8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        # 8 MiB at about 5 MiB/s: writing pauses again and again, never for the idle limit at once.
        while chunk := sock.recv(256 * 1024):
            received += chunk
            time.sleep(0.05)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == 8 << 20
    assert wait_for(lambda: SEEN["/stream/2"]["done"]) and SEEN["/stream/2"]["cut_off"] is None
