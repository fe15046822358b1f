"""Forwarding of a request to the MLflow child and of its answer back, streamed both ways."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import anyio
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.errors import mlflow_error
from proxy.metrics import record_upstream_seconds
from proxy.upstream import UpstreamState

log = logging.getLogger("mlflow_app.proxy")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers the front sets itself on the way to MLflow.
REPLACED_ON_REQUEST = frozenset({"host", "content-length", "x-forwarded-host", "x-forwarded-proto"})
# The front's own server stamps Date; MLflow's would make a second one.
REPLACED_ON_RESPONSE = frozenset({"date"})

# Chunked uploads are spooled to learn their length (MLflow's Flask handlers read a chunked body
# as empty); up to this size in memory, beyond it on disk.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 256 * 1024


class UpstreamResponse(StreamingResponse):
    """MLflow's answer streamed to the client; the upstream connection is released however it ends."""

    def __init__(self, upstream: httpx.Response, raw_headers: list[tuple[bytes, bytes]]):
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        self.raw_headers = raw_headers
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.upstream.aclose()


class UpstreamClient:
    """Sends requests to the MLflow child over a pool of kept-alive loopback connections."""

    def __init__(self, state: UpstreamState, timeout_seconds: float, drop_origin: bool = True):
        self.state = state
        self.timeout_seconds = timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,  # never route loopback traffic through a configured HTTP proxy
            # Shared by every user: keep no cookies from one user's response for the next request.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        # Forward the client's headers only, not httpx's defaults (Accept-Encoding, User-Agent, ...).
        self._client.headers.clear()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(self, request: Request, forward_origin: bool) -> Response:
        """Send `request` to MLflow and stream its answer; errors become MLflow-shaped 50x JSON."""
        if not self.state.ready:
            return self._unavailable()
        scope = request.scope
        url = upstream_url(self.state.base_url, scope)
        headers = upstream_request_headers(request, forward_origin)
        sent_at = None
        try:
            body, length = await request_body(request)
            if length is not None:
                headers.append(("content-length", str(length)))
            # As bytes: httpx encodes str values as ASCII, and a header may carry any byte above
            # 0x7f (a UTF-8 user name from the platform); as str that was a 500.
            raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            upstream_request = self._client.build_request(request.method, url, headers=raw_headers, content=body)
            # Waiting on MLflow: from the first byte sent (a streamed body included) to its headers.
            sent_at = time.perf_counter()
            upstream = await self._client.send(upstream_request, stream=True)
        except ClientDisconnect:
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        except httpx.TimeoutException:
            return mlflow_error(
                504,
                f"MLflow did not answer within {self.timeout_seconds:g} s; "
                "the request may still complete on the server.",
            )
        except httpx.TransportError as exc:
            log.warning("upstream request failed: %s", type(exc).__name__)
            if not self.state.ready:
                return self._unavailable()
            return mlflow_error(502, "MLflow closed the connection before answering; retry shortly.")
        finally:
            if sent_at is not None:
                record_upstream_seconds(scope, time.perf_counter() - sent_at)
        return UpstreamResponse(upstream, downstream_response_headers(upstream, request))

    def _unavailable(self) -> Response:
        phase = self.state.phase.value
        return mlflow_error(
            503, f"MLflow is not ready ({phase}); retry shortly.", headers={"Retry-After": "2"}
        )


def upstream_url(base_url: str, scope: Scope) -> httpx.URL:
    """The child's URL for this request, with the path exactly as the client encoded it."""
    raw_path = scope.get("raw_path") or scope["path"].encode()
    if scope["query_string"]:
        raw_path += b"?" + scope["query_string"]
    return httpx.URL(base_url).copy_with(raw_path=raw_path)


def connection_scoped(headers: list[tuple[bytes, bytes]]) -> set[str]:
    """Hop-by-hop header names, including any that the `Connection` header lists."""
    names = set(HOP_BY_HOP)
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(token.strip().lower() for token in value.decode("latin-1").split(","))
    return names


def upstream_request_headers(request: Request, forward_origin: bool) -> list[tuple[str, str]]:
    """End-to-end headers for MLflow, plus X-Forwarded-* so no remote caller passes as local."""
    raw = request.scope["headers"]
    skip = connection_scoped(raw) | REPLACED_ON_REQUEST
    if not forward_origin:
        skip.add("origin")  # checked by the front; MLflow would refuse the public origin
    headers = [
        (key.decode("latin-1"), value.decode("latin-1"))
        for key, value in raw
        if key.decode("latin-1").lower() not in skip and key.lower() != b"x-forwarded-for"
    ]
    client_ip = request.client.host if request.client else "unknown"
    prior = ", ".join(request.headers.getlist("x-forwarded-for"))
    headers.append(("x-forwarded-for", f"{prior}, {client_ip}" if prior else client_ip))
    headers.append(("x-forwarded-proto", request.headers.get("x-forwarded-proto") or request.url.scheme))
    public_host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    if public_host:
        headers.append(("x-forwarded-host", public_host))
    return headers


def downstream_response_headers(upstream: httpx.Response, request: Request) -> list[tuple[bytes, bytes]]:
    """MLflow's end-to-end response headers, with its internal address rewritten to the public one."""
    raw = upstream.headers.raw
    skip = connection_scoped(raw) | REPLACED_ON_RESPONSE
    internal = str(upstream.request.url.copy_with(raw_path=b"/")).rstrip("/")
    headers = []
    for key, value in raw:
        name = key.lower()
        if name.decode("latin-1") in skip:
            continue
        if name == b"location":
            value = public_location(value.decode("latin-1"), internal, request).encode("latin-1")
        headers.append((name, value))
    return headers


def public_location(location: str, internal_origin: str, request: Request) -> str:
    """A redirect to the child's loopback address, pointed back at the address the client used."""
    rest = location[len(internal_origin) :]
    if not location.startswith(internal_origin) or rest[:1] not in ("", "/", "?", "#"):
        return location  # elsewhere, e.g. another port that starts with the same digits
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    if not host:
        return rest or "/"
    return f"{scheme}://{host}{rest}"


async def request_body(request: Request) -> tuple[AsyncIterator[bytes] | bytes | None, int | None]:
    """The body to send upstream and its length; chunked bodies are spooled to learn the length."""
    declared = request.headers.get("content-length")
    if declared is not None:
        return (request.stream() if declared != "0" else b""), int(declared)
    if "chunked" not in request.headers.get("transfer-encoding", "").lower():
        return None, None
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
    length = 0
    async for chunk in request.stream():
        length += len(chunk)
        spool.write(chunk)
    spool.seek(0)
    return read_spool(spool), length


async def read_spool(spool: tempfile.SpooledTemporaryFile) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(spool.read, CHUNK_BYTES):
            yield chunk
    finally:
        spool.close()
