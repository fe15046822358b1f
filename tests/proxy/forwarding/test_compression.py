"""proxy/forwarding/compression.py: which answers are compressed, with which coding, and what comes out."""

from __future__ import annotations

import json
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.forwarding.compression import (
    BROTLI,
    DEFAULT_MIN_BYTES,
    GZIP,
    ResponseCompression,
    StreamEncoder,
    choose_encoding,
    compressed_headers,
)

BROWSER = b"gzip, deflate, br, zstd"
SEARCH = "/ajax-api/2.0/mlflow/runs/search"
BODY = json.dumps({"runs": [{"info": {"run_id": f"{i:032x}", "status": "FINISHED"}} for i in range(2000)]}, indent=2).encode()


def json_headers(length: int = 100_000, content_type: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", content_type),
        (b"content-length", str(length).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]


def decode(encoding: bytes, data: bytes) -> bytes:
    return zlib.decompress(data, 31) if encoding == GZIP else brotli.decompress(data)


def encoding_for(accept: bytes | None, **kwargs) -> bytes | None:
    encoder = ResponseCompression(**kwargs).encoder_for("POST", SEARCH, accept, 200, json_headers())
    return encoder.content_encoding if encoder else None


# --- Accept-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (BROWSER, BROTLI),  # equal weights: the server's preference
        (b"gzip, deflate", GZIP),  # MLflow's Python client without brotli
        (b"gzip, deflate, br", BROTLI),
        (b"br;q=0, gzip", GZIP),
        (b"br;q=0.5, gzip;q=0.8", GZIP),
        (b"br;q=0.8, gzip;q=0.5", BROTLI),
        (b"gzip;q=0, br;q=0", None),
        (b"*", BROTLI),
        (b"*;q=0", None),
        (b"gzip, *;q=0", GZIP),
        (b"br;q=0, *", GZIP),
        (b"identity", None),
        (b"identity, *;q=0", None),
        (b"deflate", None),
        (b"", None),
        (None, None),
        (b"x-gzip", GZIP),
        (b"GZIP;Q=0.5", GZIP),
        (b"  gzip ; q=0.8 ,  br ; q = 0.9 ", BROTLI),
        (b"br;q=abc, gzip", GZIP),  # a malformed weight counts as 0
        (b"br;q=2, gzip", GZIP),  # out of range counts as 0
        (b"br;q=nan, gzip", GZIP),
        (b"br;q=-1, gzip;q=0.1", GZIP),
        (b"br, br;q=0, gzip", GZIP),  # named twice: the refusal stands
        (b"gzip;level=1;q=0.2", GZIP),
        (b",,, ;q=1, gzip", GZIP),
        (b"br;q=0.001", BROTLI),
        (b"br;q=0.000", None),
    ],
)
def test_accept_encoding_weights(accept, expected):
    assert choose_encoding(accept) == expected
    assert encoding_for(accept) == expected


def test_supported_order_breaks_ties():
    assert choose_encoding(b"br, gzip", (GZIP, BROTLI)) == GZIP
    assert choose_encoding(b"br, gzip;q=0.9", (GZIP, BROTLI)) == BROTLI


CODINGS = st.sampled_from(["br", "gzip", "x-gzip", "deflate", "zstd", "identity", "*", "compress", "Br", "GZip"])
WEIGHTS = st.one_of(st.none(), st.integers(0, 1000).map(lambda n: n / 1000))


def render(items: list[tuple[str, float | None]], spaces: list[str]) -> bytes:
    parts = []
    for (coding, q), space in zip(items, spaces):
        parts.append(coding + ("" if q is None else f"{space};{space}q={q:.3f}"))
    return (spaces[0] + "," + spaces[-1]).join(parts).encode()


@given(
    items=st.lists(st.tuples(CODINGS, WEIGHTS), max_size=6, unique_by=lambda item: item[0].lower().replace("x-", "")),
    spaces=st.lists(st.sampled_from(["", " ", "  ", "\t"]), min_size=6, max_size=6),
)
def test_choice_is_the_highest_allowed_weight(items, spaces):
    """Whatever the header, the choice is a supported coding of the top weight (> 0), else None."""
    weights = {coding.lower().replace("x-", ""): (1.0 if q is None else q) for coding, q in items}
    effective = {coding: weights.get(coding, weights.get("*", 0.0)) for coding in ("br", "gzip")}
    chosen = choose_encoding(render(items, spaces))
    top = max(effective.values())
    if top == 0:
        assert chosen is None
    else:
        assert chosen is not None
        assert effective[chosen.decode()] == top
        if effective["br"] == effective["gzip"]:
            assert chosen == BROTLI


# --- what is compressed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON", b"application/problem+json"],
)
def test_large_json_is_compressed(content_type):
    policy = ResponseCompression()
    encoder = policy.encoder_for("POST", SEARCH, BROWSER, 200, json_headers(content_type=content_type))
    assert isinstance(encoder, StreamEncoder)
    assert encoder.content_encoding == BROTLI


def test_threshold_is_inclusive():
    policy = ResponseCompression(min_bytes=4096)
    assert policy.encoder_for("GET", SEARCH, BROWSER, 200, json_headers(4096)) is not None
    assert policy.encoder_for("GET", SEARCH, BROWSER, 200, json_headers(4095)) is None


def test_each_answer_gets_its_own_encoder():
    policy = ResponseCompression()
    first = policy.encoder_for("GET", SEARCH, BROWSER, 200, json_headers())
    second = policy.encoder_for("GET", SEARCH, BROWSER, 200, json_headers())
    assert first is not second


@pytest.mark.parametrize(
    ("method", "path", "status", "headers"),
    [
        ("HEAD", SEARCH, 200, json_headers()),
        ("GET", SEARCH, 204, json_headers()),
        ("GET", SEARCH, 304, json_headers()),
        ("GET", SEARCH, 206, json_headers()),
        ("GET", SEARCH, 404, json_headers()),
        ("GET", SEARCH, 500, json_headers()),
        ("GET", SEARCH, 302, json_headers()),
        ("GET", SEARCH, 200, json_headers(DEFAULT_MIN_BYTES - 1)),
        ("GET", SEARCH, 200, json_headers(content_type=b"text/event-stream")),
        ("GET", SEARCH, 200, json_headers(content_type=b"text/html; charset=utf-8")),
        ("GET", SEARCH, 200, json_headers(content_type=b"application/octet-stream")),
        ("GET", SEARCH, 200, json_headers(content_type=b"application/x-ndjson")),
        ("GET", SEARCH, 200, json_headers(content_type=b"image/svg+json-ish")),
        ("GET", SEARCH, 200, [(b"content-length", b"100000")]),  # no content type
        ("GET", SEARCH, 200, [(b"content-type", b"application/json")]),  # unknown length: a stream
        ("GET", SEARCH, 200, [(b"content-type", b"application/json"), (b"content-length", b"many")]),
        ("GET", SEARCH, 200, json_headers() + [(b"content-encoding", b"gzip")]),
        ("GET", SEARCH, 200, json_headers() + [(b"content-encoding", b"identity")]),
        ("GET", SEARCH, 200, json_headers() + [(b"content-range", b"bytes 0-99999/200000")]),
        ("GET", SEARCH, 200, json_headers() + [(b"content-disposition", b'attachment; filename="m.json"')]),
        ("GET", SEARCH, 200, json_headers() + [(b"content-disposition", b"Attachment")]),
        ("GET", SEARCH, 200, json_headers() + [(b"cache-control", b"private, No-Transform")]),
        ("GET", "/get-artifact", 200, json_headers()),
        ("GET", "/model-versions/get-artifact", 200, json_headers()),
        ("GET", "/ajax-api/2.0/mlflow/get-trace-artifact", 200, json_headers()),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/metrics.json", 200, json_headers()),
        ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts/", 200, json_headers()),
        ("GET", "/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/x.json", 200, json_headers()),  # --static-prefix
        ("GET", "/mlflow/get-artifact", 200, json_headers()),
    ],
)
def test_refusals(method, path, status, headers):
    assert ResponseCompression().encoder_for(method, path, BROWSER, status, headers) is None


def test_other_cache_control_is_no_obstacle():
    headers = json_headers() + [(b"cache-control", b"no-store")]
    assert ResponseCompression().encoder_for("GET", SEARCH, BROWSER, 200, headers) is not None


def test_disabled_compresses_nothing():
    assert ResponseCompression(enabled=False).encoder_for("GET", SEARCH, BROWSER, 200, json_headers()) is None


def test_client_without_accept_encoding_gets_identity():
    policy = ResponseCompression()
    assert policy.encoder_for("GET", SEARCH, None, 200, json_headers()) is None
    assert policy.encoder_for("GET", SEARCH, b"identity", 200, json_headers()) is None


def test_levels_reach_the_encoder():
    policy = ResponseCompression(gzip_level=9, brotli_quality=11)
    assert policy.levels == {BROTLI: 11, GZIP: 9}
    encoder = policy.encoder_for("GET", SEARCH, b"gzip", 200, json_headers())
    assert decode(GZIP, encoder.finish(BODY)) == BODY


def test_many_distinct_accept_encodings_keep_the_cache_small():
    policy = ResponseCompression()
    for i in range(1000):
        encoder = policy.encoder_for("GET", SEARCH, b"gzip, x-custom-%d" % i, 200, json_headers())
        assert encoder.content_encoding == GZIP
    assert len(policy._chosen) <= 64


@pytest.mark.parametrize("kwargs", [{"min_bytes": -1}, {"gzip_level": 0}, {"gzip_level": 10}, {"brotli_quality": -1}, {"brotli_quality": 12}])
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        ResponseCompression(**kwargs)


def test_unknown_coding_is_refused():
    with pytest.raises(ValueError, match="unsupported content coding"):
        StreamEncoder(b"zstd", 3)


# --- headers -----------------------------------------------------------------------------------


def test_headers_of_a_compressed_answer():
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"318189"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"SAMEORIGIN"),
    ]
    assert compressed_headers(headers, BROTLI) == [
        (b"content-type", b"application/json"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"vary", b"accept-encoding"),
        (b"content-encoding", b"br"),
    ]
    assert headers[1] == (b"content-length", b"318189")  # the caller's list is left alone
    assert StreamEncoder(GZIP, 1).headers(headers) == compressed_headers(headers, GZIP)


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ([(b"vary", b"Origin")], [(b"vary", b"Origin, accept-encoding")]),
        ([(b"vary", b"Origin, Cookie")], [(b"vary", b"Origin, Cookie, accept-encoding")]),
        ([(b"vary", b"Accept-Encoding")], [(b"vary", b"Accept-Encoding")]),
        ([(b"vary", b"origin,accept-encoding")], [(b"vary", b"origin,accept-encoding")]),
        ([(b"vary", b"*")], [(b"vary", b"*")]),
        ([(b"vary", b"")], [(b"vary", b"accept-encoding")]),
        (
            [(b"vary", b"Origin"), (b"vary", b"Accept-Encoding")],
            [(b"vary", b"Origin"), (b"vary", b"Accept-Encoding")],
        ),
        ([(b"vary", b"Origin"), (b"vary", b"Cookie")], [(b"vary", b"Origin, accept-encoding"), (b"vary", b"Cookie")]),
    ],
)
def test_vary_is_merged(vary, expected):
    headers = [(b"content-type", b"application/json"), *vary, (b"content-length", b"9000")]
    assert compressed_headers(headers, GZIP) == [(b"content-type", b"application/json"), *expected, (b"content-encoding", b"gzip")]


def test_validators_of_the_identity_body_are_adjusted():
    headers = [(b"etag", b'"abc"'), (b"accept-ranges", b"bytes"), (b"content-type", b"application/json")]
    assert compressed_headers(headers, GZIP) == [
        (b"etag", b'W/"abc"'),
        (b"content-type", b"application/json"),
        (b"vary", b"accept-encoding"),
        (b"content-encoding", b"gzip"),
    ]
    assert compressed_headers([(b"etag", b'W/"abc"')], GZIP)[0] == (b"etag", b'W/"abc"')


# --- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [GZIP, BROTLI])
def test_whole_body_is_one_buffer(encoding):
    encoder = StreamEncoder(encoding, 1)
    out = encoder.finish(BODY)
    assert decode(encoding, out) == BODY
    assert len(out) < len(BODY) / 5


@pytest.mark.parametrize("encoding", [GZIP, BROTLI])
def test_chunked_body_round_trips(encoding):
    encoder = StreamEncoder(encoding, 1)
    parts = [encoder.compress(BODY[i : i + 1000]) for i in range(0, len(BODY), 1000)]
    parts.append(encoder.finish())
    assert decode(encoding, b"".join(parts)) == BODY


@pytest.mark.parametrize("encoding", [GZIP, BROTLI])
@pytest.mark.parametrize("level", [1, 4, 6])
def test_large_body_streams_before_the_end(encoding, level):
    """Output comes out as input goes in: the forwarder need not hold a whole answer."""
    body = BODY * 8  # ~1.7 MB
    encoder = StreamEncoder(encoding, level)
    emitted_before_end = 0
    for i in range(0, len(body), 65536):
        emitted_before_end += len(encoder.compress(body[i : i + 65536]))
    tail = encoder.finish()
    assert emitted_before_end > len(tail)


@pytest.mark.parametrize("encoding", [GZIP, BROTLI])
def test_empty_body_round_trips(encoding):
    assert decode(encoding, StreamEncoder(encoding, 1).finish()) == b""
    encoder = StreamEncoder(encoding, 1)
    assert encoder.compress(b"") == b""
    assert decode(encoding, encoder.finish(b"")) == b""


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=20_000), st.text(max_size=5_000).map(str.encode)),
    cuts=st.lists(st.integers(0, 20_000), max_size=12),
    encoding=st.sampled_from([GZIP, BROTLI]),
    level=st.integers(1, 6),
    last_in_finish=st.booleans(),
)
def test_any_chunking_round_trips(body, cuts, encoding, level, last_in_finish):
    bounds = sorted({0, len(body), *(min(cut, len(body)) for cut in cuts)})
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    encoder = StreamEncoder(encoding, level)
    if last_in_finish and chunks:
        out = b"".join(encoder.compress(chunk) for chunk in chunks[:-1]) + encoder.finish(chunks[-1])
    else:
        out = b"".join(encoder.compress(chunk) for chunk in chunks) + encoder.finish()
    assert decode(encoding, out) == body


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.tuples(CODINGS, WEIGHTS), max_size=6, unique_by=lambda item: item[0].lower().replace("x-", "")),
    spaces=st.lists(st.sampled_from(["", " "]), min_size=6, max_size=6),
)
def test_what_the_policy_chooses_the_client_can_read(items, spaces):
    """End to end through the policy: any header, and the body decodes with the coding announced."""
    accept = render(items, spaces)
    policy = ResponseCompression()
    encoder = policy.encoder_for("GET", SEARCH, accept, 200, json_headers(len(BODY)))
    if encoder is None:
        assert choose_encoding(accept) is None
        return
    headers = compressed_headers(json_headers(len(BODY)), encoder.content_encoding)
    assert (b"content-encoding", encoder.content_encoding) in headers
    assert choose_encoding(accept) == encoder.content_encoding
    assert decode(dict(headers)[b"content-encoding"], encoder.finish(BODY)) == BODY
