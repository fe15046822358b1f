"""Property: whatever path, method and headers a client sends, the front never fails on its own
behalf (no 500 of its own, no traceback, no hang) and stays healthy. Raw bytes on a socket, so
nothing is tidied up on the way."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_http import exchange

pytestmark = pytest.mark.e2e

PREFIXES = ["/", "/static-files/", "/static-files/static/js/", "/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/",
            "/api/2.0/mlflow-artifacts/artifacts/", "/health", "/metrics", "/get-artifact", "/graphql", "/version",
            "//", "/.", ""]  # fmt: skip
NAMED_SEGMENTS = ["..", ".", "%2e%2e", "%2E%2e%2f", "%2f", "%00", "%", "%zz", "%c0%ae", "%ff", "%0d%0a", "%1b[31m",
                  "index.html", "experiments", "search", "runs", "get", "create", "~", "\\", "..%5c", ";", "?", "#", "&"]  # fmt: skip
# Bytes a request target may carry on the wire, legal or not; CR and LF would end the line.
TARGET_BYTES = st.binary(min_size=1, max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
SEGMENT = st.one_of(st.sampled_from(NAMED_SEGMENTS), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12))
STANDARD_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
ANY_METHOD = st.one_of(
    st.sampled_from(["TRACE", "CONNECT", "PROPFIND", "get", "M-SEARCH"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10),
)
HEADER_NAMES = st.one_of(
    st.sampled_from(["Accept-Encoding", "If-None-Match", "Range", "Origin", "Cookie", "Authorization", "X-Request-Id",
                     "X-Forwarded-Email", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Content-Type",
                     "Expect", "Connection", "Upgrade", "TE", "Accept", "Referer", "Forwarded", "Via"]),
    st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z"),
)  # fmt: skip
# Legal header values: visible ASCII, and any byte above 0x7f (obs-text: a UTF-8 user name).
LEGAL_VALUES = st.one_of(
    st.sampled_from(["*", "gzip, br", "bytes=0-10", "bytes=-5", "bytes=99999999-", '"abc"', "null", "https://evil.example",
                     "websocket", "Upgrade", "100-continue", "trailers", "Bearer x", "../../etc/passwd", "", " "]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40).map(
        lambda t: t.encode("latin-1")
    ),
    st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=20).map(lambda t: t.encode("utf-8")),
)  # fmt: skip
ANY_VALUE = st.binary(max_size=40).filter(lambda b: not any(c in b for c in b"\r\n"))  # controls: the parser's 400
# The front's own 500 says so; MLflow's never does.
FRONT_FAILED = b"The front failed"

TEXT_PATH = st.builds(
    lambda prefix, segments, query: (prefix + "/".join(segments) + (f"?{query}" if query else "")).encode(),
    st.sampled_from(PREFIXES),
    st.lists(SEGMENT, max_size=6),
    st.one_of(st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)),
)
RAW_PATH = st.builds(lambda prefix, tail: prefix.encode() + tail, st.sampled_from(PREFIXES), TARGET_BYTES)


@st.composite
def requests(draw) -> tuple[str, bytes, list[tuple[str, bytes | str]]]:
    """Mostly requests the parser accepts, so that most examples reach the routes and MLflow; the
    rest with any method, target bytes or header bytes."""
    wild = draw(st.integers(0, 9)) >= 8
    method = draw(ANY_METHOD if wild and draw(st.booleans()) else STANDARD_METHODS)
    path = draw(RAW_PATH if wild and draw(st.booleans()) else TEXT_PATH)
    values = st.one_of(LEGAL_VALUES, ANY_VALUE) if wild else LEGAL_VALUES
    headers = draw(st.lists(st.tuples(HEADER_NAMES, values), max_size=6))
    return method, path, headers


def send(port: int, data: bytes) -> bytes:
    return exchange(port, data, timeout=30)[0]


@pytest.fixture(scope="module")
def seen() -> Counter:
    return Counter()


@settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis directory in the checkout; every run explores afresh
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=requests(), body=st.one_of(st.none(), st.binary(max_size=200)))
def test_the_front_never_fails_on_its_own_behalf(app, seen, request, body):
    method, path, headers = request
    lines = [method.encode() + b" " + path + b" HTTP/1.1", f"Host: 127.0.0.1:{app.port}".encode()]
    for name, value in headers:
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # the framing is ours, so that every request has exactly one answer
        lines.append(name.encode() + b": " + (value.encode("latin-1") if isinstance(value, str) else value))
    lines.append(b"Connection: close")
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    data = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")

    answer = send(app.port, data)

    assert answer.startswith(b"HTTP/1.1 "), f"no answer to {data[:300]!r}: {answer[:200]!r}"
    head, _, response_body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    seen[status] += 1
    # Every answer of the front's (MLflow's, passed on, included) carries the request id; the 500
    # uvicorn sends when the front's own code raised does not. MLflow's `server` header, once the
    # mark of its answers, is dropped by the front.
    from_mlflow = b"\r\nx-request-id: " in head.lower()
    assert b"Traceback" not in answer and b'File "/' not in answer, answer[:2000]
    assert FRONT_FAILED not in response_body, f"the front failed on {data[:300]!r}"
    if status == 500:
        assert from_mlflow, f"a 500 that MLflow did not send, for {data[:300]!r}: {answer[:500]!r}"


def test_still_healthy_after_the_fuzzing(app, seen):
    health = app.health()
    assert health is not None and health.status_code == 200, health and health.text
    print(f"\nstatuses seen while fuzzing: {dict(sorted(seen.items()))}")
    assert "unhandled" not in app.log_text(), [line for line in app.log_text().splitlines() if "unhandled" in line]
