"""Compressed API answers through the real front: what is compressed, what never is, and that the
client gets back exactly what MLflow sent."""

from __future__ import annotations

import gzip

import brotli
import httpx
import pytest

from proxy.app import FrontConfig
from proxy.forwarding.compression import ResponseCompression
from tests.proxy.conftest import UPSTREAM_TIMEOUT, json_body

BROWSER = "gzip, deflate, br, zstd"


class Answer:
    """Status, headers and the body bytes exactly as sent (not decoded by the client)."""

    def __init__(self, response: httpx.Response, raw: bytes):
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = raw


async def raw_get(front, path: str, accept_encoding: str | None, method: str = "GET") -> Answer:
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding is not None else {}
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as http:
        request = http.build_request(method, path, headers=headers)
        if accept_encoding is None:
            del request.headers["accept-encoding"]
        response = await http.send(request, stream=True)
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        return Answer(response, raw)


def decoded(answer: Answer) -> bytes:
    encoding = answer.headers.get("content-encoding")
    return {"br": brotli.decompress, "gzip": gzip.decompress, None: lambda b: b}[encoding](answer.content)


@pytest.mark.parametrize(("accept", "encoding"), [(BROWSER, "br"), ("gzip", "gzip"), ("gzip;q=1, br;q=0", "gzip")])
async def test_a_large_json_answer_is_compressed_for_a_client_that_accepts_it(front, accept, encoding):
    response = await raw_get(front, "/json?kib=64", accept)

    assert response.status_code == 200
    assert response.headers["content-encoding"] == encoding
    assert "accept-encoding" in response.headers["vary"].lower()
    # Whole on arrival it goes out with its length; split into reads on a busy machine, it streams.
    length = response.headers.get("content-length")
    assert (int(length) if length else len(response.content)) == len(response.content) < 64 * 1024 // 4
    assert decoded(response) == json_body(64)


async def test_a_large_streamed_json_answer_is_passed_on_as_it_comes(front):
    # Without a Content-Length (a stream), compressing would hold parts back: never compressed.
    response = await raw_get(front, "/json?kib=1024&stream=1", BROWSER)

    assert "content-encoding" not in response.headers
    assert response.content == json_body(1024)


async def test_a_json_answer_too_large_to_arrive_at_once_is_compressed_as_it_streams(front):
    # Built here first (json_body is cached): built inside the fake MLflow, 4 MiB of JSON took more
    # than the front's 1 s upstream timeout on a loaded machine, and the answer was a 504.
    expected = json_body(4096)
    response = await raw_get(front, "/json?kib=4096", BROWSER)

    assert response.headers.get("content-encoding") == "br", (response.status_code, response.content[:300])
    assert "content-length" not in response.headers  # sent chunked, compressed part by part
    assert decoded(response) == expected


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/json?kib=2", BROWSER),  # under the threshold
        ("/json?kib=64", None),  # the client did not ask
        ("/json?kib=64", "identity"),
        ("/json?kib=64&type=application/octet-stream", BROWSER),  # not JSON
        ("/api/2.0/mlflow-artifacts/artifacts/model/MLmodel?kib=64", BROWSER),  # an artifact, whatever its type
        ("/get-artifact?path=metrics.json&kib=64", BROWSER),
    ],
)
async def test_what_is_never_compressed_passes_unchanged(front, fake_mlflow, path, accept):
    response = await raw_get(front, path, accept)

    assert "content-encoding" not in response.headers
    kib = int(path.split("kib=")[1].split("&")[0])
    assert response.content == json_body(kib)


async def test_sse_is_never_compressed(front):
    response = await raw_get(front, "/sse", BROWSER)

    assert "content-encoding" not in response.headers
    assert response.content.count(b"data: ") == 3


async def test_head_is_never_compressed(front):
    response = await raw_get(front, "/json?kib=64", BROWSER, method="HEAD")

    assert "content-encoding" not in response.headers and response.content == b""


async def test_compression_can_be_switched_off(start_front):
    off = start_front(config=FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT, compression=ResponseCompression(enabled=False)))
    response = await raw_get(off, "/json?kib=64", BROWSER)

    assert "content-encoding" not in response.headers
    assert response.content == json_body(64)
