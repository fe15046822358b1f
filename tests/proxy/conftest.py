"""Real sockets for proxy tests: a fake MLflow upstream and the front, each on its own uvicorn server."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from proxy.app import FrontConfig, create_app
from proxy.assets import UiAssets
from proxy.upstream import UpstreamPhase, UpstreamState
from tests.threaded_server import ThreadedServer

INDEX_HTML = b"<!doctype html><html><head><title>MLflow</title></head><body>ui</body></html>"
UPSTREAM_TIMEOUT = 1.0
SSE_GAP_SECONDS = 0.3
DOWNLOAD_CHUNK = 1024 * 1024
GZIPPED_JSON = gzip.compress(json.dumps({"runs": [{"run_id": str(i)} for i in range(200)]}).encode(), mtime=0)


def bound_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port, bound now so no other test can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _read_body(receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client went away while sending it."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body), True
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body), False


@functools.cache  # a 4 MiB one takes long enough on a loaded machine to pass the front's 1 s upstream timeout
def json_body(kib: int) -> bytes:
    """A JSON document of at least `kib` KiB, as repetitive as MLflow's run listings."""
    runs = []
    size = 0
    while size < kib * 1024:
        run = {"info": {"run_id": f"{len(runs):032x}", "status": "FINISHED"}, "data": {"params": [{"key": "lr", "value": "0.01"}]}}
        runs.append(run)
        size += len(json.dumps(run)) + 2
    return json.dumps({"runs": runs}).encode()


class FakeMlflow:
    """Raw ASGI stand-in for the MLflow child: echoes what reached it, plus a few special routes.

    Everything it observes is recorded on the instance so that tests (in another thread) can check
    what the front did or did not send upstream.
    """

    def __init__(self) -> None:
        self.port = 0  # set once the server socket is bound
        self.reset()

    def reset(self) -> None:
        """Forget what earlier tests sent."""
        self.calls: list[dict] = []
        self.sse_sent_at: list[float] = []
        self.slow_disconnected = threading.Event()
        self.download_sent = 0
        self.download_disconnected = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        route = {
            "/redirect/internal": self.redirect_internal,
            "/redirect/port-prefix": self.redirect_port_prefix,
            "/redirect/external": self.redirect_external,
            "/redirect/relative": self.redirect_relative,
            "/sse": self.sse,
            "/slow": self.slow,
            "/delayed": self.delayed,
            "/hop-headers": self.hop_headers,
            "/download": self.download,
            "/gzipped": self.gzipped,
            "/json": self.json_answer,
        }.get(scope["path"], self.echo)
        if route == self.echo and b"kib=" in scope["query_string"]:
            route = self.json_answer  # any path (an artifact's, say) answering JSON of that size
        await route(scope, receive, send)

    async def echo(self, scope, receive, send) -> None:
        body, _ = await _read_body(receive)
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        names = {k for k, _ in headers}
        framing = "content-length" if "content-length" in names else "chunked" if "transfer-encoding" in names else "none"
        seen = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "framing": framing,
        }
        self.calls.append(seen)
        await self._respond(send, 200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])

    async def _respond(self, send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _redirect(self, send, location: str) -> None:
        self.calls.append({"redirect": location})
        await self._respond(send, 302, b"", [(b"location", location.encode())])

    async def redirect_internal(self, scope, receive, send) -> None:
        await self._redirect(send, f"http://127.0.0.1:{self.port}/x/?next=1")

    async def redirect_port_prefix(self, scope, receive, send) -> None:
        # Another port whose digits start with ours: not this server, must not be rewritten.
        await self._redirect(send, f"http://127.0.0.1:{self.port}9/x/")

    async def redirect_external(self, scope, receive, send) -> None:
        await self._redirect(send, "https://login.example.com/x/")

    async def redirect_relative(self, scope, receive, send) -> None:
        await self._redirect(send, "/x/")

    async def sse(self, scope, receive, send) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(3):
            if i:
                await asyncio.sleep(SSE_GAP_SECONDS)
            sent_at = time.monotonic()
            self.sse_sent_at.append(sent_at)
            event = f"id: {i}\ndata: {json.dumps({'i': i, 'sent_at': sent_at})}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def slow(self, scope, receive, send) -> None:
        """Answers only after 10 s, unless the caller hangs up first (which is recorded)."""
        self.calls.append({"slow": True})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await asyncio.wait_for(disconnected(), 10)
            self.slow_disconnected.set()
        except asyncio.TimeoutError:
            await self._respond(send, 200, b"too late", [])

    async def delayed(self, scope, receive, send) -> None:
        """Answers like `echo`, after `?seconds=S` (a slow MLflow that does answer in time)."""
        await asyncio.sleep(float(parse_qs(scope["query_string"].decode()).get("seconds", ["0.2"])[0]))
        await self.echo(scope, receive, send)

    async def hop_headers(self, scope, receive, send) -> None:
        self.calls.append({"hop_headers": True})
        headers = [
            (b"connection", b"x-custom"),
            (b"x-custom", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"x-end-to-end", b"kept"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/; HttpOnly"),
            (b"content-type", b"text/plain"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hop ", "more_body": True})
        await send({"type": "http.response.body", "body": b"done"})

    async def gzipped(self, scope, receive, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
        await self._respond(send, 200, GZIPPED_JSON, headers)

    async def json_answer(self, scope, receive, send) -> None:
        """`?kib=N`: a JSON answer of about N KiB (runs as MLflow lists them), with a Content-Length, or
        with `&stream=1` in 64 KiB parts without one; `&type=` another content type."""
        query = parse_qs(scope["query_string"].decode())
        body = json_body(int(query.get("kib", ["64"])[0]))
        content_type = query.get("type", ["application/json"])[0].encode()
        if "stream" not in query:
            await self._respond(send, 200, body, [(b"content-type", content_type)])
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for start in range(0, len(body), 65536):
            await send({"type": "http.response.body", "body": body[start : start + 65536], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def download(self, scope, receive, send) -> None:
        """`?mib=N` MiB generated on the fly; stops early (and records it) when the caller hangs up."""
        size = int(parse_qs(scope["query_string"].decode()).get("mib", ["64"])[0]) * DOWNLOAD_CHUNK
        self.download_sent = 0
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = bytes(range(256)) * (DOWNLOAD_CHUNK // 256)
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            while self.download_sent < size:
                if gone.is_set():
                    self.download_disconnected.set()
                    return
                self.download_sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": self.download_sent < size})
                await asyncio.sleep(0)  # let the disconnect watcher run
        finally:
            watcher.cancel()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[FakeMlflow]:
    """The fake MLflow child, listening on loopback; one for the session (starting one costs ~0.2 s)."""
    app = FakeMlflow()
    server = ThreadedServer(app, name="fake-mlflow")
    app.port = server.port
    server.start()
    try:
        yield app
    finally:
        server.stop()


@pytest.fixture
def fake_mlflow(mlflow_server: FakeMlflow) -> FakeMlflow:
    """The fake MLflow child, with nothing recorded yet."""
    mlflow_server.reset()
    return mlflow_server


@pytest.fixture(scope="session")
def ui_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "build"
    (root / "static-files").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX_HTML)
    return root


class Front:
    """The front app on a real uvicorn server, configured as the launcher runs it."""

    def __init__(self, server: ThreadedServer, state: UpstreamState, app) -> None:
        self.server = server
        self.state = state
        self.app = app

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def run_front(
    mlflow: FakeMlflow,
    ui_build: Path,
    config: FrontConfig | None = None,
    phase: UpstreamPhase = UpstreamPhase.READY,
    base_url: str | None = None,
    assets: UiAssets | None = None,
) -> Front:
    state = UpstreamState(base_url=base_url or f"http://127.0.0.1:{mlflow.port}", phase=phase)
    app = create_app(config or FrontConfig(upstream_timeout_seconds=UPSTREAM_TIMEOUT), state, assets or UiAssets(ui_build))
    # As launcher/server.py runs it: the front computes X-Forwarded-For from the real peer.
    server = ThreadedServer(app, name="front", lifespan="auto", proxy_headers=False, server_header=False)
    return Front(server.start(), state, app)


@pytest.fixture
def start_front(fake_mlflow: FakeMlflow, ui_build: Path) -> Iterator[Callable[..., Front]]:
    """Factory: `start_front(config=..., phase=..., base_url=..., assets=...)` runs a front of its own."""
    started: list[Front] = []

    def start(**options) -> Front:
        started.append(run_front(fake_mlflow, ui_build, **options))
        return started[-1]

    try:
        yield start
    finally:
        for front in started:
            front.server.stop()


@pytest.fixture(scope="session")
def shared_front(mlflow_server: FakeMlflow, ui_build: Path) -> Iterator[Front]:
    front = run_front(mlflow_server, ui_build)
    try:
        yield front
    finally:
        front.server.stop()


@pytest.fixture
def front(shared_front: Front, fake_mlflow: FakeMlflow) -> Front:
    """The front with default settings, pointed at `fake_mlflow`; shared, so tests must not change it."""
    assert shared_front.state.ready
    return shared_front


@pytest.fixture
async def client(front: Front):
    async with httpx.AsyncClient(base_url=front.url, timeout=10, trust_env=False) as http:
        yield http
