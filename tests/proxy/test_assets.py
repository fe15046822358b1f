"""UiAssets driven through a real Starlette app, plus the real MLflow UI build."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import os
import random
import threading
from pathlib import Path

import brotli
import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from proxy import assets as assets_module
from proxy.assets import UiAssets, UiAssetsMissing

MAIN_JS = "static/js/main.0123abcd.js"
WORKER_JS = "static/js/x.d0f8ea2c83c08b63528f.worker.js"
CSS = "static/css/main.89abcdef.css"
PNG = "static/media/logo.1234abcd.png"


def _js_text(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        line = f'var v{rng.randrange(10**6)} = "{rng.choice(["alpha", "beta", "gamma"])}{rng.randrange(10**4)}";\n'
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


@pytest.fixture
def build(tmp_path: Path) -> Path:
    root = tmp_path / "build"
    for relative, content in {
        "index.html": b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>",
        "manifest.json": b'{"short_name": "MLflow"}',
        "favicon.ico": bytes(range(256)) * 4,
        MAIN_JS: _js_text(0, 300_000),
        WORKER_JS: _js_text(1, 4_000),
        CSS: b".mlflow { color: red; }\n" * 200,
        PNG: b"\x89PNG\r\n\x1a\n" + random.Random(2).randbytes(5_000),
        "static/media/icon.abcdef12.svg": b'<svg xmlns="http://www.w3.org/2000/svg"></svg>' * 40,
        "static/media/font.abcdef12.woff2": random.Random(3).randbytes(2_000),
        "lib/notebook-trace-renderer/index.html": b"<html></html>",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (tmp_path / "secret.txt").write_text("outside the build\n")
    (root / "static" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "static" / "alias.js").symlink_to(root / MAIN_JS)  # inside the root: allowed
    return root


def _app(assets: UiAssets) -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]

    async def index(request: Request):
        return await assets.response("index.html", request.headers, request.method)

    async def static(request: Request):
        return await assets.response(request.path_params["path"], request.headers, request.method)

    return Starlette(routes=[Route("/", index, methods=methods), Route("/static-files/{path:path}", static, methods=methods)])


@pytest.fixture
def assets(build: Path) -> UiAssets:
    return UiAssets(build)


@pytest.fixture
async def client(assets: UiAssets):
    transport = httpx.ASGITransport(app=_app(assets))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def compress_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    real = assets_module._compress

    def counting(data: bytes, encoding: str) -> bytes:
        calls.append((encoding, len(data)))
        return real(data, encoding)

    monkeypatch.setattr(assets_module, "_compress", counting)
    return calls


async def _raw_get(client: httpx.AsyncClient, url: str, accept_encoding: str) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent, before httpx decodes any Content-Encoding."""
    async with client.stream("GET", url, headers={"Accept-Encoding": accept_encoding}) as response:
        return response, b"".join([chunk async for chunk in response.aiter_raw()])


def _decode(encoding: str | None, body: bytes) -> bytes:
    return {"br": brotli.decompress, "gzip": gzip.decompress, None: lambda b: b}[encoding](body)


# --- content types and cache policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        (f"/static-files/{MAIN_JS}", "text/javascript; charset=utf-8"),
        (f"/static-files/{CSS}", "text/css; charset=utf-8"),
        (f"/static-files/{PNG}", "image/png"),
        ("/static-files/manifest.json", "application/json"),
        ("/static-files/favicon.ico", "image/x-icon"),
        ("/static-files/static/media/icon.abcdef12.svg", "image/svg+xml"),
        ("/static-files/static/media/font.abcdef12.woff2", "font/woff2"),
    ],
)
async def test_content_types(client: httpx.AsyncClient, url: str, content_type: str) -> None:
    response = await client.get(url, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type


@pytest.mark.parametrize(
    ("url", "cache_control"),
    [
        (f"/static-files/{MAIN_JS}", "public, max-age=31536000, immutable"),
        (f"/static-files/{WORKER_JS}", "public, max-age=31536000, immutable"),
        (f"/static-files/{PNG}", "public, max-age=31536000, immutable"),
        ("/", "no-cache"),
        ("/static-files/index.html", "no-cache"),
        ("/static-files/manifest.json", "no-cache"),
        ("/static-files/favicon.ico", "no-cache"),
    ],
)
async def test_cache_policy(client: httpx.AsyncClient, url: str, cache_control: str) -> None:
    response = await client.get(url)
    assert response.headers["cache-control"] == cache_control


# --- ETags and 304 ------------------------------------------------------------------------------


async def test_etag_is_strong_and_content_derived(client: httpx.AsyncClient, build: Path) -> None:
    first = await client.get(f"/static-files/{MAIN_JS}", headers={"Accept-Encoding": "identity"})
    again = await client.get(f"/static-files/{MAIN_JS}", headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert again.headers["etag"] == etag
    br = await client.get(f"/static-files/{MAIN_JS}", headers={"Accept-Encoding": "br"})
    gz = await client.get(f"/static-files/{MAIN_JS}", headers={"Accept-Encoding": "gzip"})
    assert br.headers["etag"] == etag[:-1] + '-br"'
    assert gz.headers["etag"] == etag[:-1] + '-gzip"'


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", '"nope", {etag}', "W/{etag}", '"a" , W/{etag} ,"b"', "*"],
)
async def test_if_none_match_gives_304(client: httpx.AsyncClient, if_none_match: str) -> None:
    url, headers = f"/static-files/{MAIN_JS}", {"Accept-Encoding": "br"}
    etag = (await client.get(url, headers=headers)).headers["etag"]
    response = await client.get(url, headers={**headers, "If-None-Match": if_none_match.format(etag=etag)})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["vary"] == "Accept-Encoding"


async def test_if_none_match_mismatch_gives_200(client: httpx.AsyncClient) -> None:
    url = f"/static-files/{MAIN_JS}"
    identity_tag = (await client.get(url, headers={"Accept-Encoding": "identity"})).headers["etag"]
    # The identity tag does not validate the brotli representation.
    response = await client.get(url, headers={"Accept-Encoding": "br", "If-None-Match": f'"other", {identity_tag}'})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "br"


async def test_changed_file_gets_new_etag_and_body(client: httpx.AsyncClient, build: Path) -> None:
    url, path = f"/static-files/{MAIN_JS}", build / MAIN_JS
    before = await client.get(url, headers={"Accept-Encoding": "br"})
    new_content = _js_text(9, 200_000)
    path.write_bytes(new_content)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after, body = await _raw_get(client, url, "br")
    assert after.headers["etag"] != before.headers["etag"]
    assert brotli.decompress(body) == new_content
    stale = await client.get(url, headers={"Accept-Encoding": "br", "If-None-Match": before.headers["etag"]})
    assert stale.status_code == 200


# --- compression --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        ("br", "br"),
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("gzip, br;q=0", "gzip"),
        ("br;q=0.0, gzip;q=0.5", "gzip"),
        ("br; q=0, *", "gzip"),
        ("*", "br"),
        ("gzip;q=0, br;q=0", None),
        ("br;q=nonsense, identity", None),
        ("identity", None),
        ("", None),
    ],
)
async def test_encoding_negotiation(client: httpx.AsyncClient, build: Path, accept_encoding: str, expected: str | None) -> None:
    response, body = await _raw_get(client, f"/static-files/{MAIN_JS}", accept_encoding)
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == expected
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(body)
    assert _decode(expected, body) == (build / MAIN_JS).read_bytes()
    if expected:
        assert len(body) < (build / MAIN_JS).stat().st_size // 2


async def test_small_and_binary_files_are_not_compressed(client: httpx.AsyncClient) -> None:
    small = await client.get("/", headers={"Accept-Encoding": "br, gzip"})
    assert "content-encoding" not in small.headers
    assert small.headers["vary"] == "Accept-Encoding"  # compressible type: always varies
    for url in (f"/static-files/{PNG}", "/static-files/static/media/font.abcdef12.woff2"):
        binary = await client.get(url, headers={"Accept-Encoding": "br, gzip"})
        assert "content-encoding" not in binary.headers
        assert "vary" not in binary.headers


async def test_css_and_svg_are_compressed(client: httpx.AsyncClient, build: Path) -> None:
    for relative in (CSS, "static/media/icon.abcdef12.svg"):
        response, body = await _raw_get(client, f"/static-files/{relative}", "gzip")
        assert response.headers["content-encoding"] == "gzip"
        assert gzip.decompress(body) == (build / relative).read_bytes()


async def test_compressed_once_under_concurrent_requests(client: httpx.AsyncClient, compress_calls: list[tuple[str, int]]) -> None:
    url = f"/static-files/{MAIN_JS}"
    responses = await asyncio.gather(
        *(client.get(url, headers={"Accept-Encoding": "br"}) for _ in range(10)),
        *(client.get(url, headers={"Accept-Encoding": "gzip"}) for _ in range(10)),
        *(client.head(url, headers={"Accept-Encoding": "br"}) for _ in range(5)),
    )
    assert {r.status_code for r in responses} == {200}
    assert sorted(encoding for encoding, _ in compress_calls) == ["br", "gzip"]
    await client.get(url, headers={"Accept-Encoding": "br"})
    assert len(compress_calls) == 2


async def test_identity_is_streamed_from_disk(assets: UiAssets, compress_calls: list) -> None:
    response = await assets.response(MAIN_JS, Headers({"accept-encoding": "identity"}))
    assert isinstance(response, FileResponse)
    assert compress_calls == []


async def test_precompress_all_compresses_each_file_once_beside_requests(client: httpx.AsyncClient, assets: UiAssets, build: Path, compress_calls: list[tuple[str, int]]) -> None:
    worker = threading.Thread(target=assets.precompress_all)
    worker.start()
    urls = [f"/static-files/{p}" for p in (MAIN_JS, CSS)] * 5
    await asyncio.gather(*(client.get(url, headers={"Accept-Encoding": "br"}) for url in urls))
    await asyncio.to_thread(worker.join)
    # main.js, its in-root alias (same real file), worker.js, css, svg; index.html and json are under 1 KiB.
    assert sorted(compress_calls) == sorted((encoding, (build / p).stat().st_size) for p in (MAIN_JS, WORKER_JS, CSS, "static/media/icon.abcdef12.svg") for encoding in ("br", "gzip"))
    for p in (MAIN_JS, CSS, WORKER_JS):
        await client.get(f"/static-files/{p}", headers={"Accept-Encoding": "gzip"})
    assert len(compress_calls) == 8


# --- HEAD and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("accept_encoding", ["identity", "br"])
async def test_head_has_headers_and_no_body(client: httpx.AsyncClient, accept_encoding: str) -> None:
    url, headers = f"/static-files/{MAIN_JS}", {"Accept-Encoding": accept_encoding}
    get, head = await client.get(url, headers=headers), await client.head(url, headers=headers)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-length", "content-type", "etag", "cache-control", "vary"):
        assert head.headers[name] == get.headers[name]
    assert head.headers.get("content-encoding") == get.headers.get("content-encoding")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_other_methods_get_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, f"/static-files/{MAIN_JS}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error_code"] == "BAD_REQUEST"


# --- path safety --------------------------------------------------------------------------------


def _assert_not_found(response, shown: str | None = None) -> None:
    assert response.status_code == 404
    body = json.loads(response.body if hasattr(response, "body") else response.content)
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert body["message"].startswith("No UI asset at '")
    assert "Traceback" not in body["message"]
    if shown is not None:
        assert body["message"] == f"No UI asset at '{shown}'"


@pytest.mark.parametrize(
    "url",
    [
        "/static-files/%2e%2e/secret.txt",
        "/static-files/%2E%2E/build/index.html",
        "/static-files/static/%2e%2e/%2e%2e/secret.txt",
        "/static-files/static/leak.txt",  # symlink escaping the root
        "/static-files/static/js",  # a directory
        "/static-files/static/",
        "/static-files/nope.js",
    ],
)
async def test_escapes_directories_and_missing_files_get_404(client: httpx.AsyncClient, url: str) -> None:
    _assert_not_found(await client.get(url))


async def test_literal_dot_dot_in_raw_path_gets_404(assets: UiAssets) -> None:
    # httpx normalises a literal "..", so speak ASGI directly to send it as a server would.
    app, sent = _app(assets), []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/static-files/../secret.txt",
        "raw_path": b"/static-files/../secret.txt",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 404
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize(
    ("relative_path", "shown"),
    [
        ("../secret.txt", "../secret.txt"),
        ("/etc/passwd", "/etc/passwd"),
        ("a\x00b", "a\\x00b"),
        ("static/..\\..\\secret.txt", "static/..\\\\..\\\\secret.txt"),
        ("static/../index.html", "static/../index.html"),  # ".." is refused even when it stays inside
        ("", ""),
        ("static/leak.txt", "static/leak.txt"),
    ],
)
async def test_unsafe_paths_rejected_by_response(assets: UiAssets, relative_path: str, shown: str) -> None:
    _assert_not_found(await assets.response(relative_path, Headers()), shown)


async def test_echoed_path_is_truncated(assets: UiAssets) -> None:
    response = await assets.response("x" * 5000, Headers())
    _assert_not_found(response, "x" * 200 + "...")


async def test_symlink_inside_root_is_served(client: httpx.AsyncClient, build: Path) -> None:
    response = await client.get("/static-files/static/alias.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == (build / MAIN_JS).read_bytes()
    assert response.headers["cache-control"] == "no-cache"  # the URL's name carries no hash


# --- construction -------------------------------------------------------------------------------


def test_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UiAssetsMissing, match="index.html") as raised:
        UiAssets(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(raised.value)
    assert "\n" not in str(raised.value)


def test_root_without_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    with pytest.raises(UiAssetsMissing, match="MLflow UI build not found"):
        UiAssets(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError):
        UiAssets(tmp_path / "file")


# --- the real MLflow build ----------------------------------------------------------------------


async def test_real_mlflow_build_serves_main_js_with_brotli() -> None:
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations
    root = Path(spec.submodule_search_locations[0]) / "server" / "js" / "build"
    (main_js,) = (root / "static" / "js").glob("main.*.js")
    transport = httpx.ASGITransport(app=_app(UiAssets(root)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response, body = await _raw_get(client, f"/static-files/static/js/{main_js.name}", "gzip, deflate, br")
        index = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "br"
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert brotli.decompress(body) == main_js.read_bytes()
    assert index.status_code == 200
    assert index.headers["cache-control"] == "no-cache"
    assert main_js.name in index.text
