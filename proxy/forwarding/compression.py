"""Compression of MLflow's large JSON answers on their way to the client: the policy and the encoder.

The forwarder asks `ResponseCompression.encoder_for(...)` once per proxied response, with the
response head as MLflow sent it. None (the usual answer, and a cheap one): forward the answer as
it is. A `StreamEncoder`: send `encoder.headers(...)` instead of MLflow's headers, pass every
body chunk through `compress()` and end with `finish()` (a whole body: `finish(body)`).

Only JSON answers of a known length at or above `min_bytes` are compressed: MLflow's Flask
handlers always send a Content-Length, so a JSON answer without one is a stream that some endpoint
writes as it goes, and a compressor would hold its parts back. Never artifacts, already encoded
bodies, event streams, ranges, HEAD, 204 or 304.

The defaults come from bench/compression.py (docs/benchmarks.md, "Compressed API answers").
"""

from __future__ import annotations

import zlib

import brotli

BROTLI = b"br"
GZIP = b"gzip"
# Server preference among codings the client weights equally (browsers, and MLflow's Python client
# with brotli installed, send both at q=1): brotli quality 1 took 2.4x less CPU than gzip 1 and gave
# 5% fewer bytes on a 1,000-run runs/search (20% fewer on a metric history).
PREFERENCE = (BROTLI, GZIP)

DEFAULT_MIN_BYTES = 4096
DEFAULT_GZIP_LEVEL = 1
DEFAULT_BROTLI_QUALITY = 1
# A 256 KiB window: with brotli's default 4 MiB one, quality >= 2 holds back up to 4 MiB of the answer
# (a 6 MB one sent nothing before finish) and takes ~4.7 MiB per response being compressed; at 18
# bits quality 4 takes ~1.3 MiB and sends from 512 KiB in. Quality 1 takes ~280 KiB either way.
BROTLI_WINDOW_BITS = 18

# 2xx answers that carry a body meant for this request: not 204/205 (no body), not 206 (a range
# of the identity body).
_COMPRESSIBLE_STATUSES = frozenset({200, 201, 202, 203})
_ACCEPT_CACHE_SIZE = 64  # distinct Accept-Encoding values remembered; clients send a handful


class StreamEncoder:
    """One response body being compressed: feed chunks in order, then finish once.

    `compress()` returns what the compressor has ready, which may be empty; `finish()` returns
    the rest. A body that arrives whole becomes a single buffer with `finish(body)`.
    """

    __slots__ = ("content_encoding", "_process", "_flush")

    def __init__(self, content_encoding: bytes, level: int) -> None:
        self.content_encoding = content_encoding
        if content_encoding == GZIP:
            compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing, 32 KiB window
            self._process, self._flush = compressor.compress, compressor.flush
        elif content_encoding == BROTLI:
            compressor = brotli.Compressor(mode=brotli.MODE_TEXT, quality=level, lgwin=BROTLI_WINDOW_BITS)
            self._process, self._flush = compressor.process, compressor.finish
        else:
            raise ValueError(f"unsupported content coding {content_encoding!r}; supported: br, gzip")

    def compress(self, chunk: bytes) -> bytes:
        """The compressed bytes ready after `chunk` (often b"" for small chunks)."""
        return self._process(chunk) if chunk else b""

    def finish(self, chunk: bytes = b"") -> bytes:
        """Compress the last `chunk` (if any) and end the stream: the remaining bytes, as one buffer."""
        head = self._process(chunk) if chunk else b""
        tail = self._flush()
        return head + tail if head else tail

    def headers(self, response_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`compressed_headers` for this encoder's coding."""
        return compressed_headers(response_headers, self.content_encoding)


class ResponseCompression:
    """Which proxied answers to compress, and how; built once from the settings."""

    def __init__(
        self,
        min_bytes: int = DEFAULT_MIN_BYTES,
        enabled: bool = True,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
        brotli_quality: int = DEFAULT_BROTLI_QUALITY,
    ) -> None:
        if min_bytes < 0:
            raise ValueError(f"min_bytes must be >= 0, not {min_bytes}")
        if not 1 <= gzip_level <= 9:
            raise ValueError(f"gzip_level must be 1-9, not {gzip_level}")
        if not 0 <= brotli_quality <= 11:
            raise ValueError(f"brotli_quality must be 0-11, not {brotli_quality}")
        self.enabled = enabled
        self.min_bytes = min_bytes
        self.levels = {BROTLI: brotli_quality, GZIP: gzip_level}
        self._chosen: dict[bytes, bytes | None] = {}

    def encoder_for(
        self,
        method: str,
        path: str,
        accept_encoding: bytes | None,
        status: int,
        response_headers: list[tuple[bytes, bytes]],
    ) -> StreamEncoder | None:
        """A fresh encoder if this answer should be compressed, else None.

        `path` is the request path without query string; `response_headers` are MLflow's, names
        lowercase. Yes only for: a 200-203 answer to anything but HEAD, JSON (`application/json`
        or `+json`), a Content-Length of at least `min_bytes`, no Content-Encoding, Content-Range
        or `Cache-Control: no-transform`, not an attachment nor an artifact path (`…-artifact`,
        `…/mlflow-artifacts/…`), and a client whose Accept-Encoding (several such headers joined
        with ", ") allows br or gzip (q > 0). A missing Accept-Encoding means no.
        """
        # Cheapest refusals first: most answers are small and stop at their Content-Length.
        if not self.enabled or status not in _COMPRESSIBLE_STATUSES or not accept_encoding or method == "HEAD":
            return None
        length = -1
        content_type = b""
        for name, value in response_headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return None
                if length < self.min_bytes:
                    return None
            elif name == b"content-type":
                content_type = value  # checked after the length, which usually decides alone
            elif name == b"content-encoding" or name == b"content-range":
                return None
            elif name == b"content-disposition" and value[:10].lower() == b"attachment":
                return None
            elif name == b"cache-control" and b"no-transform" in value.lower():
                return None  # RFC 9111 §5.2.2.6: a proxy must not change the content
        if length < 0 or not _is_json(content_type) or path.endswith("-artifact") or "/mlflow-artifacts/" in path:
            return None
        try:
            encoding = self._chosen[accept_encoding]
        except KeyError:
            encoding = choose_encoding(accept_encoding, PREFERENCE)
            if len(self._chosen) >= _ACCEPT_CACHE_SIZE:
                self._chosen.clear()  # whatever clients send, the cache stays small
            self._chosen[accept_encoding] = encoding
        if encoding is None:
            return None
        return StreamEncoder(encoding, self.levels[encoding])


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" or (media_type.startswith(b"application/") and media_type.endswith(b"+json"))


def choose_encoding(accept_encoding: bytes | None, supported: tuple[bytes, ...] = PREFERENCE) -> bytes | None:
    """The coding of `supported` that an Accept-Encoding value weights highest, or None.

    RFC 9110 §12.5.3: `q=0` refuses a coding; `*` weights every coding not named; `x-gzip` is
    `gzip`; a malformed or out-of-range q counts as 0; when a coding is named twice, the lower
    weight stands. Ties go to the earlier coding in `supported`. An absent or empty header, or
    one that allows only `identity`, gives None.
    """
    if not accept_encoding:
        return None
    weights: dict[bytes, float] = {}
    for item in accept_encoding.lower().split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip()
        if not coding:
            continue
        if coding == b"x-gzip":
            coding = GZIP
        weight = _weight(params)
        weights[coding] = min(weight, weights.get(coding, weight))
    wildcard = weights.get(b"*", 0.0)
    best, best_weight = None, 0.0
    for coding in supported:
        weight = weights.get(coding, wildcard)
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


def _weight(params: bytes) -> float:
    """The q of `;q=0.5`-style parameters: 1 when absent, 0 when malformed or out of [0, 1]."""
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip() == b"q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0  # NaN fails both comparisons
    return 1.0


def compressed_headers(response_headers: list[tuple[bytes, bytes]], content_encoding: bytes) -> list[tuple[bytes, bytes]]:
    """MLflow's headers for the compressed answer: no Content-Length (the length is not known
    before the end), Content-Encoding set, `accept-encoding` added to Vary (merged into an
    existing Vary), a strong ETag made weak and Accept-Ranges dropped, as they describe the
    identity body. Every other header is kept, in order."""
    headers: list[tuple[bytes, bytes]] = []
    vary_index = -1
    vary_done = False
    for name, value in response_headers:
        if name == b"content-length" or name == b"accept-ranges":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        elif name == b"vary":
            tokens = [token.strip().lower() for token in value.split(b",")]
            if b"accept-encoding" in tokens or b"*" in tokens:
                vary_done = True
            elif vary_index < 0:
                vary_index = len(headers)
        headers.append((name, value))
    if not vary_done:
        if vary_index >= 0:
            name, value = headers[vary_index]
            headers[vary_index] = (name, value + b", accept-encoding" if value.strip() else b"accept-encoding")
        else:
            headers.append((b"vary", b"accept-encoding"))
    headers.append((b"content-encoding", content_encoding))
    return headers
